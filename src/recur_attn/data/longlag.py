"""Synthetic long-time-lag tasks as LightningDataModules.

Every data set is generated in ``setup()`` from ``seed`` with ``torch.Generator``
(vectorised: 100k adding sequences at T=100 take a few tens of milliseconds), so the
same arguments give the same tensors on every CPU.  Nothing is downloaded.

Each split has its own generator, seeded from ``(seed, split)`` through
``numpy.random.SeedSequence``: changing ``n_train`` leaves the validation and test
sets as they were.  Training batches are shuffled with a generator seeded from
``(seed, "shuffle")``.

Batches are dicts of tensors::

    {"x": (B, T, F) float32, "y": target, "lengths": (B,) int64}

``lengths`` holds each sequence's true length (``T`` for fixed-length tasks); padded
steps of variable-length tasks are all-zero inputs.  ``y`` is ``float32 (B,)`` for
regression, ``int64 (B,)`` for classification and ``int64 (B, T)`` for per-step
targets, with ``-100`` (``ignore_index``) at the steps that are not scored.  The
feed-forward form of parity (``ParityDataModule(as_sequence=False)``) yields
``{"x": (B, k) float32, "y": (B,) int64}`` with no ``lengths``.

Every DataModule exposes ``dims``: ``input_size``, ``output_size``, ``target``
(``"regression"``, ``"classification"`` or ``"per_step_classification"``, which picks
the loss), ``readout`` (``"last"``: one output from each sequence's last true step;
``"all"``: one output per step), ``max_len`` (padded length of a batch) and
``sequence`` (False only for the vector form of parity).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from recur_attn.data.base import SplitDataModule
from recur_attn.data.resumable import ResumableDataLoader

__all__ = [
    "AddingDataModule",
    "CopyDataModule",
    "TemporalOrderDataModule",
    "ParityDataModule",
]

IGNORE_INDEX = -100
_SPLITS = ("train", "val", "test")


def split_generator(seed: int, key: str) -> torch.Generator:
    """A ``torch.Generator`` seeded from ``(seed, key)``; distinct keys give unrelated streams."""
    words = [int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF] + [ord(c) for c in key]
    state = np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_choice(name: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {name} {value!r}; valid choices: {valid}")
    return value


def _one_hot(idx: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Index tensor -> float32 one-hot with a trailing class axis; negative indices give zeros."""
    shifted = idx.long().clamp(min=-1) + 1  # class 0 of the shifted code = "none"
    return torch.nn.functional.one_hot(shifted, num_classes + 1)[..., 1:].float()


class SyntheticDataset(Dataset):
    """A map-style data set over a dict of equally long tensors.

    ``transform`` turns a (batched) dict of stored tensors into the model's batch, e.g.
    symbol indices into one-hot vectors, so that only compact tensors are kept in memory.
    ``__getitems__`` fetches a whole batch with one indexing op (used by DataLoader).
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        sizes = {k: v.shape[0] for k, v in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all tensors must have the same first dimension, got {sizes}")
        self.tensors = tensors
        self.transform = transform
        self._len = next(iter(sizes.values()))

    def __len__(self) -> int:
        return self._len

    def _fetch(self, index) -> dict[str, torch.Tensor]:
        batch = {k: v[index] for k, v in self.tensors.items()}
        return self.transform(batch) if self.transform is not None else batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self._fetch(i)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return self._fetch(torch.as_tensor(indices, dtype=torch.long))


def collate_batch(data):
    """Pass through a batch already built by ``SyntheticDataset.__getitems__``."""
    if isinstance(data, dict):
        return data
    return default_collate(data)


class _SyntheticDataModule(SplitDataModule):
    """Shared set-up, loaders and argument checks of the synthetic tasks."""

    dims: dict[str, Any]

    def _init_common(
        self, n_train: int, n_val: int, n_test: int, batch_size: int, seed: int, num_workers: int
    ) -> None:
        self.sizes = {
            "train": _check_int("n_train", n_train, 1),
            "val": _check_int("n_val", n_val, 1),
            "test": _check_int("n_test", n_test, 1),
        }
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.num_workers = _check_int("num_workers", num_workers, 0)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        self.datasets: dict[str, SyntheticDataset] = {}

    # -- to be provided by each task ---------------------------------------------------
    def generate(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` examples as a dict of stored tensors."""
        raise NotImplementedError

    def transform(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stored tensors -> the batch the model sees (identity by default)."""
        return batch

    # -- Lightning hooks ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        for split in _SPLITS:
            if split not in self.datasets:
                tensors = self.generate(self.sizes[split], split_generator(self.seed, split))
                self.datasets[split] = SyntheticDataset(tensors, self.transform)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"call setup() before {split}_dataloader()")
        # the shuffled training loader resumes mid-epoch at the exact batch (data/resumable.py)
        loader_cls = ResumableDataLoader if shuffle else DataLoader
        return loader_cls(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=split_generator(self.seed, "shuffle") if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch,
        )



def _random_lengths(n: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """Lengths uniform in [T, T + T // 10] (both ends included), as Hochreiter & Schmidhuber 1997."""
    return torch.randint(seq_len, seq_len + seq_len // 10 + 1, (n,), generator=generator)


# ======================================================================================
class AddingDataModule(_SyntheticDataModule):
    """The adding problem.

    ``variant="modern"`` (Le et al. 2015; Arjovsky et al. 2016): ``x`` is (B, T, 2); channel
    0 holds values U[0, 1], channel 1 is a marker channel with exactly two 1s, the first
    at a step drawn uniformly from the first half ``[0, T//2)``, the second from the second
    half ``[T//2, T)``.  Target ``y = X1 + X2`` (float, (B,)).  Var(y) = 1/6, so always
    predicting the mean 1 gives MSE 1/6 ~ 0.167.

    ``variant="hochreiter"`` (Hochreiter & Schmidhuber 1997, Experiment 4): values U[-1, 1];
    sequence lengths uniform in ``[T, T + T//10]`` (padded with zeros to ``T + T//10``,
    true lengths in ``lengths``).  The first marked step is one of the first ten
    ``[0, 10)``, the second one of the first ``T//2 - 1`` still unmarked steps (so in
    ``[0, T//2)``, never the first).  Marker channel: 1.0 at the two marked steps, -1.0 at
    the first and the last (true) step unless marked, 0 elsewhere.  If the first step is
    marked (by either draw), its value is set to 0.  Target ``y = 0.5 + (X1 + X2) / 4`` in
    [0, 1], X1 and X2 the values at the two marked steps.

    Batch: ``{"x": (B, T', 2) float32, "y": (B,) float32, "lengths": (B,) int64}`` with
    T' = T (modern) or T + T//10 (hochreiter).  ``dims``: input_size 2, output_size 1,
    target "regression", readout "last".
    """

    VARIANTS = ("modern", "hochreiter")

    def __init__(
        self,
        seq_len: int = 100,
        variant: str = "modern",
        n_train: int = 100_000,
        n_val: int = 5_000,
        n_test: int = 10_000,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.variant = _check_choice("variant", variant, self.VARIANTS)
        minimum = 2 if variant == "modern" else 20
        self.seq_len = _check_int(f"seq_len (variant {variant!r})", seq_len, minimum)
        self._init_common(n_train, n_val, n_test, batch_size, seed, num_workers)
        max_len = seq_len if variant == "modern" else seq_len + seq_len // 10
        self.dims = {
            "input_size": 2,
            "output_size": 1,
            "target": "regression",
            "readout": "last",
            "max_len": max_len,
            "sequence": True,
        }

    def generate(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        T = self.seq_len
        rows = torch.arange(n)
        if self.variant == "modern":
            values = torch.rand(n, T, generator=generator)  # (n, T) U[0,1]
            p1 = torch.randint(0, T // 2, (n,), generator=generator)
            p2 = torch.randint(T // 2, T, (n,), generator=generator)
            markers = torch.zeros(n, T)
            markers[rows, p1] = 1.0
            markers[rows, p2] = 1.0
            y = values[rows, p1] + values[rows, p2]
            lengths = torch.full((n,), T, dtype=torch.long)
        else:
            max_len = T + T // 10
            lengths = _random_lengths(n, T, generator)
            steps = torch.arange(max_len)
            inside = steps[None, :] < lengths[:, None]  # (n, T') True on true steps
            values = (torch.rand(n, max_len, generator=generator) * 2 - 1) * inside
            p1 = torch.randint(0, 10, (n,), generator=generator)
            r = torch.randint(0, T // 2 - 1, (n,), generator=generator)
            p2 = r + (r >= p1).long()  # the (r+1)-th unmarked step of [0, T//2)
            markers = torch.zeros(n, max_len)
            markers[:, 0] = -1.0
            markers[rows, lengths - 1] = -1.0
            markers[rows, p1] = 1.0
            markers[rows, p2] = 1.0
            # "In the rare case where the first pair of the sequence gets marked, we set X1 to
            # zero": the value of step 0 is 0 whenever step 0 is marked (by either draw).
            values[:, 0] = torch.where((p1 == 0) | (p2 == 0), 0.0, values[:, 0])
            y = 0.5 + (values[rows, p1] + values[rows, p2]) / 4.0
        x = torch.stack([values, markers], dim=-1).float()  # (n, T', 2)
        return {"x": x, "y": y.float(), "lengths": lengths.long()}


# ======================================================================================
class CopyDataModule(_SyntheticDataModule):
    """The copy (memory) task (Hochreiter & Schmidhuber 1997's long-lag memory problems in the
    form of Arjovsky et al. 2016, "Unitary evolution RNNs", section 4.1).

    Input symbols: ``0 .. vocab-1`` data symbols, ``vocab`` = blank, ``vocab+1`` = delimiter.
    A sequence is ``n_symbols`` random data symbols, ``delay - 1`` blanks, the delimiter,
    then ``n_symbols`` blanks, length ``T = delay + 2 * n_symbols`` (Arjovsky et al.'s
    ``T + 20`` with ``delay = T``, ``n_symbols = 10``, ``vocab = 8``).  The model must
    output the data symbols, in order, at the last ``n_symbols`` steps (the step after the
    delimiter onwards).

    Targets ``y`` (B, T) int64: the data symbols at the last ``n_symbols`` steps and
    ``-100`` (ignore_index) elsewhere; with ``score_blanks=True`` every other step has the
    target ``vocab`` ("output blank", the Arjovsky et al. set-up, where the memoryless
    baseline has cross-entropy ``n_symbols * log(vocab) / T``).

    Batch: ``{"x": (B, T, vocab + 2) float32 one-hot, "y": (B, T) int64, "lengths": (B,)
    int64 (= T)}``.  ``dims``: input_size vocab + 2, output_size vocab (+1 with
    score_blanks), target "per_step_classification", readout "all".
    """

    def __init__(
        self,
        n_symbols: int = 10,
        vocab: int = 8,
        delay: int = 100,
        score_blanks: bool = False,
        n_train: int = 100_000,
        n_val: int = 5_000,
        n_test: int = 10_000,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.n_symbols = _check_int("n_symbols", n_symbols, 1)
        self.vocab = _check_int("vocab", vocab, 2)
        self.delay = _check_int("delay", delay, 1)
        if not isinstance(score_blanks, bool):
            raise ValueError(f"score_blanks must be True or False, got {score_blanks!r}")
        self.score_blanks = score_blanks
        self._init_common(n_train, n_val, n_test, batch_size, seed, num_workers)
        self.seq_len = delay + 2 * n_symbols
        self.blank = vocab
        self.delimiter = vocab + 1
        self.dims = {
            "input_size": vocab + 2,
            "output_size": vocab + int(score_blanks),
            "target": "per_step_classification",
            "readout": "all",
            "max_len": self.seq_len,
            "sequence": True,
        }

    def generate(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        S, T = self.n_symbols, self.seq_len
        symbols = torch.randint(0, self.vocab, (n, S), generator=generator)  # (n, S)
        inputs = torch.full((n, T), self.blank, dtype=torch.long)
        inputs[:, :S] = symbols
        inputs[:, S + self.delay - 1] = self.delimiter
        fill = self.blank if self.score_blanks else IGNORE_INDEX
        y = torch.full((n, T), fill, dtype=torch.long)
        y[:, T - S :] = symbols
        small = torch.int8 if self.vocab + 2 <= 127 else torch.int16
        return {"x": inputs.to(small), "y": y, "lengths": torch.full((n,), T, dtype=torch.long)}

    def transform(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**batch, "x": _one_hot(batch["x"], self.vocab + 2)}


# ======================================================================================
class TemporalOrderDataModule(_SyntheticDataModule):
    """Temporal order (Hochreiter & Schmidhuber 1997, Experiments 6a and 6b).

    Symbols (one-hot, 8 inputs): ``a b c d`` (distractors, indices 0-3), ``X`` = 4,
    ``Y`` = 5, ``B`` = 6, ``E`` = 7.  As in the paper, a sequence starts with ``E`` and ends
    with the trigger symbol ``B``; every other step is a random distractor except the
    relevant steps, which hold ``X`` or ``Y``.  Lengths are uniform in ``[T, T + T//10]``
    (100-110 for T=100; padded with zero vectors, true lengths in ``lengths``).

    ``n_relevant=2`` (6a): relevant steps t1 in [10, 20], t2 in [50, 60]; 4 classes
    XX=0 (Q), XY=1 (R), YX=2 (S), YY=3 (U).
    ``n_relevant=3`` (6b): t1 in [10, 20], t2 in [33, 43], t3 in [66, 76]; 8 classes.
    The class is the binary number of the relevant symbols read in order, X=0, Y=1
    (so XYX = 0b010 = 2).  The windows are given for T=100 and scale as
    ``round(bound * T / 100)``.

    Batch: ``{"x": (B, T + T//10, 8) float32, "y": (B,) int64, "lengths": (B,) int64}``.
    ``dims``: input_size 8, output_size 2**n_relevant, target "classification", readout "last".
    """

    WINDOWS = {2: ((10, 20), (50, 60)), 3: ((10, 20), (33, 43), (66, 76))}
    SYMBOLS = ("a", "b", "c", "d", "X", "Y", "B", "E")
    X, Y, B, E = 4, 5, 6, 7

    def __init__(
        self,
        seq_len: int = 100,
        n_relevant: int = 2,
        n_train: int = 100_000,
        n_val: int = 5_000,
        n_test: int = 10_000,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.seq_len = _check_int("seq_len", seq_len, 20)
        self.n_relevant = _check_choice("n_relevant", n_relevant, tuple(self.WINDOWS))
        self._init_common(n_train, n_val, n_test, batch_size, seed, num_workers)
        self.windows = [
            (round(lo * seq_len / 100), round(hi * seq_len / 100)) for lo, hi in self.WINDOWS[n_relevant]
        ]
        self.dims = {
            "input_size": len(self.SYMBOLS),
            "output_size": 2**n_relevant,
            "target": "classification",
            "readout": "last",
            "max_len": seq_len + seq_len // 10,
            "sequence": True,
        }

    def generate(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        T = self.seq_len
        max_len = T + T // 10
        rows = torch.arange(n)
        lengths = _random_lengths(n, T, generator)
        seq = torch.randint(0, 4, (n, max_len), generator=generator)  # distractors a-d
        seq[:, 0] = self.E
        y = torch.zeros(n, dtype=torch.long)
        for lo, hi in self.windows:
            pos = torch.randint(lo, hi + 1, (n,), generator=generator)
            is_y = torch.randint(0, 2, (n,), generator=generator)
            seq[rows, pos] = self.X + is_y
            y = 2 * y + is_y
        seq[rows, lengths - 1] = self.B
        seq[torch.arange(max_len)[None, :] >= lengths[:, None]] = -1  # padding -> zero vector
        return {"x": seq.to(torch.int8), "y": y, "lengths": lengths.long()}

    def transform(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**batch, "x": _one_hot(batch["x"], len(self.SYMBOLS))}


# ======================================================================================
class ParityDataModule(_SyntheticDataModule):
    """k-bit parity: the class is the XOR of ``k_bits`` random bits in {0, 1}
    (as used for Grid LSTM by Kalchbrenner et al. 2015, and for recurrent nets as a long-lag task).

    ``as_sequence=True``: one bit per step, ``{"x": (B, k, 1) float32, "y": (B,) int64,
    "lengths": (B,) int64 (= k)}``, the class read at the last step (readout "last").
    ``as_sequence=False``: the bit string as one vector for feed-forward / Grid networks,
    ``{"x": (B, k) float32, "y": (B,) int64}`` with no ``lengths``.
    ``dims``: input_size 1 (sequence) or k (vector), output_size 2, target
    "classification", readout "last", sequence = as_sequence.
    """

    def __init__(
        self,
        k_bits: int = 16,
        as_sequence: bool = True,
        n_train: int = 100_000,
        n_val: int = 5_000,
        n_test: int = 10_000,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.k_bits = _check_int("k_bits", k_bits, 1)
        if not isinstance(as_sequence, bool):
            raise ValueError(f"as_sequence must be True or False, got {as_sequence!r}")
        self.as_sequence = as_sequence
        self._init_common(n_train, n_val, n_test, batch_size, seed, num_workers)
        self.dims = {
            "input_size": 1 if as_sequence else k_bits,
            "output_size": 2,
            "target": "classification",
            "readout": "last",
            "max_len": k_bits,
            "sequence": as_sequence,
        }

    def generate(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        k = self.k_bits
        bits = torch.randint(0, 2, (n, k), generator=generator)  # (n, k)
        y = bits.sum(dim=1) % 2
        if self.as_sequence:
            return {"x": bits.float().unsqueeze(-1), "y": y, "lengths": torch.full((n,), k, dtype=torch.long)}
        return {"x": bits.float(), "y": y}
