"""Polyphonic music as binary piano rolls: JSB Chorales and music21's Bach chorales.

A chorale is a sequence of time steps (quarter notes); each step is the set of
MIDI pitches sounding at that step. As a piano roll it is a binary matrix
``(T, 88)`` whose column ``k`` is MIDI pitch ``21 + k`` (A0 .. C8, the 88 piano
keys).

Two sources:

* :class:`JSBChoralesDataModule`: the split of Boulanger-Lewandowski, Bengio and
  Vincent (ICML 2012), 229/76/77 chorales quantised to quarter notes, read from
  a JSON file ``{"train": [...], "valid": [...], "test": [...]}`` (each chorale a
  list of steps, each step a list of MIDI pitches). The repository carries a copy
  in ``data/jsb-chorales-quarter.json`` (see ``data/README.md``).
* :class:`Music21ChoralesDataModule`: the 371 chorales of the ``music21``
  package's corpus (an optional extra: ``pip install 'recur-attn[music]'``),
  sampled at every quarter note, with our own seeded split. Parsing takes tens
  of seconds; the piano rolls are cached as a ``.pt`` file after the first parse.

Batches (a dict) for next-frame density modelling::

    x        (B, T, 88) float  the input: a zero frame, then frames 1..T-1
    y        (B, T, 88) float  the target: frames 1..T (zero past a chorale's end)
    lengths  (B,) long         true lengths T_i; steps t >= T_i are padding

so the model predicts every frame of a chorale, the first from an all-zero
input, and the NLL is averaged over all frames of the split.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from recur_attn.data.base import SplitDataModule
from recur_attn.data.resumable import ResumableDataLoader

LOWEST_PITCH = 21  # A0
HIGHEST_PITCH = 108  # C8
NUM_KEYS = HIGHEST_PITCH - LOWEST_PITCH + 1  # 88

SPLITS = ("train", "valid", "test")
JSB_FILENAME = "jsb-chorales-quarter.json"
# The copy carried by the repository (repo_root/data/...), used when data_dir lacks the file.
REPO_DATA_DIR = Path(__file__).resolve().parents[3] / "data"


def pitches_to_roll(chorale: Sequence[Sequence[int]], *, where: str = "chorale") -> Tensor:
    """A chorale (list of steps, each a list of MIDI pitches) -> a binary roll (T, 88) float.

    ``where`` names the chorale in error messages. A pitch outside 21..108 or a
    non-integer is a ValueError.
    """
    roll = torch.zeros(len(chorale), NUM_KEYS)
    for t, step in enumerate(chorale):
        if not isinstance(step, (list, tuple)):
            raise ValueError(f"{where}, step {t}: expected a list of MIDI pitches, got {step!r}")
        for p in step:
            if isinstance(p, bool) or not isinstance(p, int) or not LOWEST_PITCH <= p <= HIGHEST_PITCH:
                raise ValueError(
                    f"{where}, step {t}: pitch {p!r} is not an integer MIDI pitch in "
                    f"{LOWEST_PITCH}..{HIGHEST_PITCH}"
                )
            roll[t, p - LOWEST_PITCH] = 1.0
    return roll


def roll_to_pitches(roll: Tensor) -> list[list[int]]:
    """The inverse of :func:`pitches_to_roll`: (T, 88) -> list of sorted MIDI pitch lists."""
    if roll.dim() != 2 or roll.shape[1] != NUM_KEYS:
        raise ValueError(f"a piano roll has shape (T, {NUM_KEYS}), got {tuple(roll.shape)}")
    return [[LOWEST_PITCH + int(k) for k in torch.nonzero(step > 0.5).flatten()] for step in roll]


def load_jsb_json(path: str | Path) -> dict[str, list[Tensor]]:
    """Read a JSB-style JSON file -> {"train"|"valid"|"test": list of (T, 88) rolls}.

    Malformed JSON or a wrong structure raises ValueError naming the file (and
    the line for a JSON syntax error); a missing file says how to get it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"JSB Chorales file not found: {path}. The repository carries a copy in "
            f"data/{JSB_FILENAME}; point data.data_dir (or data.path) at it."
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 JSON ({e.reason} at byte {e.start})") from None
    if not isinstance(raw, dict) or not all(s in raw for s in SPLITS):
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"{path}: expected an object with keys {list(SPLITS)}, got {keys}")
    out: dict[str, list[Tensor]] = {}
    for split in SPLITS:
        chorales = raw[split]
        if not isinstance(chorales, list) or not chorales:
            raise ValueError(f"{path}: split {split!r} must be a non-empty list of chorales")
        rolls = []
        for i, ch in enumerate(chorales):
            if not isinstance(ch, list) or not ch:
                raise ValueError(f"{path}: {split}[{i}] must be a non-empty list of time steps")
            rolls.append(pitches_to_roll(ch, where=f"{path}: {split}[{i}]"))
        out[split] = rolls
    return out


class PianoRollDataset(Dataset):
    """A list of piano rolls (T_i, 88); item i is roll i."""

    def __init__(self, rolls: Sequence[Tensor]) -> None:
        self.rolls = list(rolls)

    def __len__(self) -> int:
        return len(self.rolls)

    def __getitem__(self, i: int) -> Tensor:
        return self.rolls[i]

    @property
    def num_frames(self) -> int:
        return sum(len(r) for r in self.rolls)


def collate_rolls(rolls: Sequence[Tensor]) -> dict[str, Tensor]:
    """Pad rolls to a batch: {"x": (B, T, 88), "y": (B, T, 88), "lengths": (B,)}.

    ``x`` is ``y`` shifted right by one step with a zero frame first.
    """
    lengths = torch.tensor([len(r) for r in rolls], dtype=torch.long)
    t_max = int(lengths.max())
    y = torch.zeros(len(rolls), t_max, NUM_KEYS)  # (B, T, 88)
    for i, r in enumerate(rolls):
        y[i, : len(r)] = r
    x = torch.cat([torch.zeros(len(rolls), 1, NUM_KEYS), y[:, :-1]], dim=1)  # (B, T, 88)
    return {"x": x, "y": y, "lengths": lengths}


class PianoRollDataModule(SplitDataModule):
    """Shared loaders for piano-roll data; subclasses implement :meth:`load_splits`."""

    split_names = ("train", "valid", "test")

    def __init__(self, batch_size: int = 16, num_workers: int = 0, pin_memory: bool = False, seed: int = 0) -> None:
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed  # the training loader's shuffle (a generator of its own: exact mid-epoch resume)
        self.splits: dict[str, PianoRollDataset] | None = None

    @property
    def dims(self) -> dict[str, int]:
        """Sizes the model needs: 88 keys in, 88 Bernoulli logits out."""
        return {"input_size": NUM_KEYS, "output_size": NUM_KEYS}

    def load_splits(self) -> dict[str, list[Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = {k: PianoRollDataset(v) for k, v in self.load_splits().items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        loader_cls = ResumableDataLoader if shuffle else DataLoader  # exact mid-epoch resume
        return loader_cls(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed + 1) if shuffle else None,
            collate_fn=collate_rolls,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )



class JSBChoralesDataModule(PianoRollDataModule):
    """JSB Chorales, Boulanger-Lewandowski split (229/76/77), quarter-note steps, 88-key rolls.

    Args:
      data_dir: folder holding ``jsb-chorales-quarter.json``; when the file is not
        there, the repository's own copy (``data/``) is read.
      path: an explicit JSON file (overrides data_dir).
      seed: the training loader's shuffle (its own generator, so that a resumed run sees the same batches).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        path: str | None = None,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, seed)
        self.path = self.resolve_path(data_dir, path)

    @staticmethod
    def resolve_path(data_dir: str | None, path: str | None) -> Path:
        if path is not None:
            return Path(path)
        if data_dir is not None and (Path(data_dir) / JSB_FILENAME).is_file():
            return Path(data_dir) / JSB_FILENAME
        return REPO_DATA_DIR / JSB_FILENAME

    def load_splits(self) -> dict[str, list[Tensor]]:
        return load_jsb_json(self.path)


def music21_chorale_roll(score, *, where: str = "chorale") -> Tensor:
    """A music21 score -> a (T, 88) roll sampled at every quarter note.

    Step t holds every pitch sounding at quarter-note time t (a note with
    offset o and duration d sounds at the integer times o <= t < o + d), the
    quantisation of Boulanger-Lewandowski et al. Ties are merged first.
    """
    import math

    flat = score.stripTies().flatten()
    notes = list(flat.notes)
    if not notes:
        raise ValueError(f"{where}: no notes")
    end = max(float(n.offset) + float(n.quarterLength) for n in notes)
    steps: list[set[int]] = [set() for _ in range(int(math.ceil(end - 1e-9)))]
    for n in notes:
        start, stop = float(n.offset), float(n.offset) + float(n.quarterLength)
        for t in range(int(math.ceil(start - 1e-9)), int(math.ceil(stop - 1e-9))):
            steps[t].update(p.midi for p in n.pitches)
    return pitches_to_roll([sorted(s) for s in steps], where=where)


class Music21ChoralesDataModule(PianoRollDataModule):
    """The Bach chorales of music21's corpus as 88-key quarter-note rolls (optional extra).

    All chorales of ``music21.corpus.chorales.Iterator`` (371) are parsed once and
    cached in ``cache_dir/music21-chorales-quarter.pt``; a seeded shuffle then
    splits them by the fractions ``split`` (train, valid, test).
    """

    CACHE_NAME = "music21-chorales-quarter.pt"

    def __init__(
        self,
        cache_dir: str = "data/cache",
        split: Sequence[float] = (0.6, 0.2, 0.2),
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, seed)
        if len(split) != 3 or any(f <= 0 for f in split) or abs(sum(split) - 1.0) > 1e-6:
            raise ValueError(f"split must be three positive fractions summing to 1, got {list(split)}")
        self.cache_path = Path(cache_dir) / self.CACHE_NAME
        self.split_fractions = tuple(float(f) for f in split)

    def parse_corpus(self) -> list[Tensor]:
        try:
            from music21 import corpus
        except ImportError as e:
            raise ImportError(
                "Music21ChoralesDataModule needs the music21 package: pip install 'recur-attn[music]'"
            ) from e
        rolls = []
        for i, score in enumerate(corpus.chorales.Iterator(returnType="stream")):
            rolls.append(music21_chorale_roll(score, where=f"music21 chorale {i}"))
        return rolls

    def all_rolls(self) -> list[Tensor]:
        if self.cache_path.is_file():
            cached = torch.load(self.cache_path, weights_only=True)
            return [r.float() for r in cached["rolls"]]
        rolls = self.parse_corpus()
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"rolls": [r.to(torch.uint8) for r in rolls]}, self.cache_path)
        return rolls

    def load_splits(self) -> dict[str, list[Tensor]]:
        rolls = self.all_rolls()
        order = list(range(len(rolls)))
        random.Random(self.seed).shuffle(order)
        n_train = round(self.split_fractions[0] * len(rolls))
        n_valid = round(self.split_fractions[1] * len(rolls))
        idx = {
            "train": order[:n_train],
            "valid": order[n_train : n_train + n_valid],
            "test": order[n_train + n_valid :],
        }
        return {k: [rolls[i] for i in v] for k, v in idx.items()}
