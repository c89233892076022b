"""Date normalisation: human-readable dates in many formats -> ISO ``YYYY-MM-DD``.

The classic small demonstration of attention: "Sunday, May 3, 1987",
"03.05.87", "3 May, 1987" ... -> "1987-05-03", character by character. The
dates are drawn uniformly from [start, end] and written with babel's CLDR
date patterns (``babel.dates.format_date``) in the given locales.

Held out: the days of the range are shuffled once (by ``seed``) and split
into disjoint train / val / test sets of days, so no test date appears in
training in any format. Everything is generated deterministically from
``seed``. Two-digit years are unambiguous only while the range spans at most
100 years (the default is 1950-2049).

Batches and ``dims``: see :mod:`recur_attn.data.translation`.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

from recur_attn.data.translation import PairsDataModule

#: CLDR patterns (babel); "short" .. "full" are the locale's own styles.
FORMATS: tuple[str, ...] = (
    "short", "medium", "long", "full",
    "d MMM y", "d MMMM y", "dd MMM y", "d MMM, y", "d MMMM, y", "dd, MMM y",
    "d MM yy", "MMMM d y", "MMMM d, y", "dd.MM.yy", "EEEE d MMMM y", "EEE, d MMM y",
    "y-MM-dd", "dd MMMM yyyy",
)


def _parse(d: str | dt.date) -> dt.date:
    if isinstance(d, dt.date):
        return d
    try:
        return dt.date.fromisoformat(str(d))
    except ValueError:
        raise ValueError(f"dates must be ISO YYYY-MM-DD, got {d!r}") from None


def generate_dates(n: int, days: Sequence[dt.date], rng: random.Random, formats: Sequence[str],
                   locales: Sequence[str]) -> list[tuple[str, str]]:
    """n (human-readable, ISO) pairs, each a random day of ``days`` in a random format and locale."""
    from babel.dates import format_date

    out = []
    for _ in range(n):
        day = days[rng.randrange(len(days))]
        fmt = formats[rng.randrange(len(formats))]
        loc = locales[rng.randrange(len(locales))]
        out.append((format_date(day, fmt, locale=loc), day.isoformat()))
    return out


class DatesDataModule(PairsDataModule):
    """Human-readable -> ISO date pairs, character level.

    Args:
        n_train, n_val, n_test: pairs per split.
        start, end: the range of dates (ISO strings, inclusive).
        val_fraction, test_fraction: shares of the days held out for val / test.
        formats: CLDR patterns (default :data:`FORMATS`).
        locales: babel locales (default ["en_US"]).
        batch_size, eval_batch_size, seed, num_workers: as usual.
    """

    def __init__(self, n_train: int = 20000, n_val: int = 1000, n_test: int = 2000,
                 start: str = "1950-01-01", end: str = "2049-12-31", val_fraction: float = 0.05,
                 test_fraction: float = 0.05, formats: Sequence[str] | None = None,
                 locales: Sequence[str] | None = None, batch_size: int = 128,
                 eval_batch_size: int | None = 512, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(src_tokenizer="char", tgt_tokenizer="char", batch_size=batch_size,
                         eval_batch_size=eval_batch_size, seed=seed, num_workers=num_workers)
        for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.n = {"train": n_train, "val": n_val, "test": n_test}
        self.start, self.end = _parse(start), _parse(end)
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction and test_fraction must be in (0, 1) with a sum < 1, "
                             f"got {val_fraction} and {test_fraction}")
        self.val_fraction, self.test_fraction = float(val_fraction), float(test_fraction)
        self.formats = tuple(formats) if formats else FORMATS
        self.locales = tuple(locales) if locales else ("en_US",)
        from babel import Locale, UnknownLocaleError

        for loc in self.locales:
            try:
                Locale.parse(loc)
            except (UnknownLocaleError, ValueError) as err:
                raise ValueError(f"unknown babel locale {loc!r}: {err}") from None
        self._build()  # small and fast (~1 s): dims are known at once

    def split_days(self) -> dict[str, list[dt.date]]:
        ndays = (self.end - self.start).days + 1
        days = [self.start + dt.timedelta(days=i) for i in range(ndays)]
        random.Random(f"{self.seed}-days").shuffle(days)
        nv, nt = max(1, int(ndays * self.val_fraction)), max(1, int(ndays * self.test_fraction))
        if nv + nt >= ndays:
            raise ValueError(f"the date range has {ndays} days: too few to hold out {nv} + {nt}")
        return {"val": days[:nv], "test": days[nv:nv + nt], "train": days[nv + nt:]}

    def load_pairs(self) -> dict[str, list[tuple[str, str]]]:
        days = self.split_days()
        return {split: generate_dates(self.n[split], days[split], random.Random(f"{self.seed}-{split}"),
                                      self.formats, self.locales)
                for split in ("train", "val", "test")}
