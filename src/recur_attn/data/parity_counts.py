"""k-bit parity whose *training* strings have a uniformly distributed number of ones.

Uniformly random k-bit strings (``ParityDataModule``) have a Binomial(k, 1/2)
number of ones; under that distribution the parity label is uncorrelated with
every function of fewer than k bits, so the gradient signal of a network at
initialisation shrinks exponentially with k. Drawing the number of ones
uniformly from 0..k (then its positions uniformly) keeps the task the same
function, but makes the label correlate with smooth functions of the bit count,
which gradient descent can pick up first (see docs/grid_lstm.md for measurements).

Only the training split changes: validation and test strings are uniformly
random, as in ``ParityDataModule``, so test accuracy measures parity on the
usual distribution. Batches and ``dims``: as ``ParityDataModule``.
"""

from __future__ import annotations

import torch

from recur_attn.data.longlag import (
    _SPLITS,
    ParityDataModule,
    SyntheticDataset,
    split_generator,
)

__all__ = ["CountBalancedParityDataModule", "TRAIN_COUNTS"]

TRAIN_COUNTS = ("binomial", "uniform")


class CountBalancedParityDataModule(ParityDataModule):
    """``ParityDataModule`` with ``train_counts``: "uniform" (the number of ones of a
    training string is uniform in 0..k) or "binomial" (uniformly random strings, exactly
    ``ParityDataModule``)."""

    def __init__(self, k_bits: int = 16, as_sequence: bool = False, train_counts: str = "uniform",
                 n_train: int = 100_000, n_val: int = 5_000, n_test: int = 10_000, batch_size: int = 64,
                 seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(k_bits=k_bits, as_sequence=as_sequence, n_train=n_train, n_val=n_val, n_test=n_test,
                         batch_size=batch_size, seed=seed, num_workers=num_workers)
        if train_counts not in TRAIN_COUNTS:
            raise ValueError(f"unknown train_counts {train_counts!r}; valid choices: {', '.join(TRAIN_COUNTS)}")
        self.train_counts = train_counts

    def generate_count_uniform(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        k = self.k_bits
        ones = torch.randint(0, k + 1, (n, 1), generator=generator)  # (n, 1) number of ones
        ranks = torch.rand(n, k, generator=generator).argsort(dim=1).argsort(dim=1)  # random permutation
        bits = (ranks < ones).long()  # (n, k), exactly `ones` of them set
        y = bits.sum(dim=1) % 2
        if self.as_sequence:
            return {"x": bits.float().unsqueeze(-1), "y": y, "lengths": torch.full((n,), k, dtype=torch.long)}
        return {"x": bits.float(), "y": y}

    def setup(self, stage: str | None = None) -> None:
        for split in _SPLITS:
            if split in self.datasets:
                continue
            g = split_generator(self.seed, split)
            if split == "train" and self.train_counts == "uniform":
                tensors = self.generate_count_uniform(self.sizes[split], g)
            else:
                tensors = self.generate(self.sizes[split], g)
            self.datasets[split] = SyntheticDataset(tensors, self.transform)
