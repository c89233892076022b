"""The part every task shares: optimizer/scheduler from Hydra partials, torch.compile.

A task is a LightningModule that receives a ready network (``net``, a plain
nn.Module built by Hydra) and the optimizer / scheduler as partials
(``_partial_: true`` in the config: called with the parameters, resp. the
optimizer, here). Subclasses define the loss, metrics and steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning import LightningModule
from torch import nn

SCHEDULER_INTERVALS = ("epoch", "step")


class BaseTask(LightningModule):
    """Args:
        net: the network.
        optimizer: a callable params -> torch.optim.Optimizer (a Hydra partial).
        scheduler: None, or a callable optimizer -> LR scheduler (a Hydra partial).
        scheduler_monitor: the metric a ReduceLROnPlateau-like scheduler watches.
        scheduler_interval: "epoch" or "step".
        compile: run the network through torch.compile when fitting.
    """

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, scheduler_monitor: str = "val/loss",
                 scheduler_interval: str = "epoch", compile: bool = False) -> None:
        super().__init__()
        if not callable(optimizer):
            raise TypeError(
                f"optimizer must be a callable params -> Optimizer (a Hydra partial, `_partial_: true`), "
                f"got {type(optimizer).__name__}"
            )
        if scheduler is not None and not callable(scheduler):
            raise TypeError(f"scheduler must be None or a callable optimizer -> scheduler, got {type(scheduler).__name__}")
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(f"scheduler_interval must be one of {SCHEDULER_INTERVALS}, got {scheduler_interval!r}")
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_monitor = scheduler_monitor
        self.scheduler_interval = scheduler_interval
        self.compile = bool(compile)

    def setup(self, stage: str) -> None:
        if self.compile and stage == "fit":
            self.net = torch.compile(self.net)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.trainer.model.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.scheduler_monitor,
                "interval": self.scheduler_interval,
                "frequency": 1,
            },
        }
