"""Fault-injection callbacks that subprocess tests add with `+callbacks.<name>._target_=...`."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class KillRank(pl.Callback):
    """SIGKILLs the process of global rank `rank` before global step `at_step` (a dead node)."""

    def __init__(self, rank: int = 1, at_step: int = 4) -> None:
        self.rank, self.at_step = rank, at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGKILL)
