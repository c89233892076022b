"""Integer addition as character sequences (the 15-digit addition task of
Kalchbrenner, Danihelka & Graves 2015, Sect. 4.2).

An example is the string ``"a+b=s."`` with ``s = a + b``; the operands have a
number of digits drawn uniformly from ``[min_digits, max_digits]`` (then the
value uniformly among the numbers of that many digits). The network reads the
string one character a step (teacher forcing) and is scored on predicting
every character after ``=``: the digits of the sum and the end mark ``.``.
With ``reverse=True`` every number is written least significant digit first
(an easier variant for a left-to-right reader: carries flow forwards).

Vocabulary ``0123456789+=.`` (13 symbols). Batches::

    {"x": (B, T, 13) float32 one-hot (all-zero past the end),
     "y": (B, T) int64, the next character at the scored steps, -100 elsewhere,
     "lengths": (B,) int64}

``dims``: input_size 13, output_size 13, target "per_step_classification",
readout "all", max_len T, sequence True. Val and test sums never occur in the
training set (pairs (a, b) seen in training are dropped from them).
A sequence is solved when every scored step is right: :func:`sequence_accuracy`.
"""

from __future__ import annotations

import numpy as np
import torch

from recur_attn.data.longlag import (
    IGNORE_INDEX,
    SyntheticDataset,
    _check_int,
    _one_hot,
    _SyntheticDataModule,
    split_generator,
)

__all__ = ["AdditionDataModule", "VOCAB", "sequence_accuracy", "decode"]

VOCAB = "0123456789+=."
_INDEX = {c: i for i, c in enumerate(VOCAB)}


def decode(tokens: torch.Tensor) -> str:
    """Token ids (T,) -> string (negative ids, i.e. padding, are dropped)."""
    return "".join(VOCAB[int(t)] for t in tokens if int(t) >= 0)


def sequence_accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of sequences whose every scored step (y != -100) is predicted right.

    logits (B, T, C), y (B, T) -> scalar tensor.
    """
    scored = y != IGNORE_INDEX  # (B, T)
    right = (logits.argmax(-1) == y) | ~scored
    return right.all(dim=1).float().mean()


class AdditionDataModule(_SyntheticDataModule):
    """``max_digits``-digit addition (default 15) as a per-step classification task."""

    def __init__(self, max_digits: int = 15, min_digits: int = 1, reverse: bool = False,
                 n_train: int = 100_000, n_val: int = 1_000, n_test: int = 2_000, batch_size: int = 64,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.max_digits = _check_int("max_digits", max_digits, 1)
        if self.max_digits > 17:
            raise ValueError(f"max_digits must be <= 17 (int64 sums), got {max_digits}")
        self.min_digits = _check_int("min_digits", min_digits, 1)
        if self.min_digits > self.max_digits:
            raise ValueError(f"min_digits={min_digits} > max_digits={max_digits}")
        if not isinstance(reverse, bool):
            raise ValueError(f"reverse must be True or False, got {reverse!r}")
        self.reverse = reverse
        self._init_common(n_train, n_val, n_test, batch_size, seed, num_workers)
        # "a+b=" + sum (max_digits + 1) + "." ; the input is all but the last character
        self.max_len = 2 * self.max_digits + 2 + self.max_digits + 1 + 1 - 1
        self.dims = {
            "input_size": len(VOCAB),
            "output_size": len(VOCAB),
            "target": "per_step_classification",
            "readout": "all",
            "max_len": self.max_len,
            "sequence": True,
        }
        self._train_pairs: set[tuple[int, int]] | None = None

    # -- generation ----------------------------------------------------------------------
    def _numbers(self, n: int, g: torch.Generator) -> torch.Tensor:
        d = torch.randint(self.min_digits, self.max_digits + 1, (n,), generator=g)  # digits per number
        low = torch.where(d == 1, torch.zeros_like(d), 10 ** (d - 1))
        high = 10 ** d  # exclusive
        u = torch.rand(n, generator=g, dtype=torch.float64)
        return low + torch.floor(u * (high - low).double()).long()

    def _string(self, a: int, b: int) -> str:
        def w(v: int) -> str:
            s = str(v)
            return s[::-1] if self.reverse else s

        return f"{w(a)}+{w(b)}={w(a + b)}."

    def generate_pairs(self, n: int, g: torch.Generator) -> list[tuple[int, int]]:
        a, b = self._numbers(n, g).tolist(), self._numbers(n, g).tolist()
        return list(zip(a, b))

    def encode(self, pairs: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        n = len(pairs)
        T = self.max_len
        strings = [self._string(a, b) for a, b in pairs]
        raw = np.frombuffer("".join(s.ljust(T + 1) for s in strings).encode("ascii"), dtype=np.uint8)
        table = np.full(256, -1, dtype=np.int64)
        for c, i in _INDEX.items():
            table[ord(c)] = i
        ids = torch.from_numpy(table[raw].reshape(n, T + 1))  # (n, T+1), -1 = padding
        lengths = torch.tensor([len(s) - 1 for s in strings], dtype=torch.long)  # input steps
        eq = torch.tensor([s.index("=") for s in strings], dtype=torch.long)
        steps = torch.arange(T)[None, :]  # (1, T)
        scored = (steps >= eq[:, None]) & (steps < lengths[:, None])  # every character after "="
        nxt = ids[:, 1:]  # (n, T): the next character
        y = torch.where(scored, nxt, torch.full_like(nxt, IGNORE_INDEX))
        inputs = torch.where(steps < lengths[:, None], ids[:, :T], torch.full_like(nxt, -1))  # no "." input
        return {"tokens": inputs, "y": y, "lengths": lengths}

    def generate(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.encode(self.generate_pairs(n, generator))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        train = self.generate_pairs(self.sizes["train"], split_generator(self.seed, "train"))
        seen = set(train)
        self.datasets["train"] = SyntheticDataset(self.encode(train), self.transform)
        for split in ("val", "test"):
            pairs = [p for p in self.generate_pairs(self.sizes[split], split_generator(self.seed, split))
                     if p not in seen]
            if not pairs:
                raise ValueError(f"every {split} pair also occurs in the training set: raise max_digits")
            self.datasets[split] = SyntheticDataset(self.encode(pairs), self.transform)

    def transform(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"x": _one_hot(batch["tokens"], len(VOCAB)), "y": batch["y"], "lengths": batch["lengths"]}
