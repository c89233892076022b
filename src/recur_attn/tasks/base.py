"""The part every task shares: optimizer/scheduler from Hydra partials, torch.compile.

A task is a LightningModule that receives a ready network (``net``, a plain
nn.Module built by Hydra) and the optimizer / scheduler as partials
(``_partial_: true`` in the config: called with the parameters, resp. the
optimizer, here). Subclasses define the loss, metrics and steps.

Best-so-far metrics (every ``MinMetric`` / ``MaxMetric`` attribute, e.g. ``val_loss_best``)
survive a resume: torchmetrics keeps metric states out of ``state_dict``, so checkpoints
hold their values under ``best_metrics``, and :meth:`BaseTask.on_train_start` starts them
from there (clean in a fresh run: Lightning's sanity check has run validation by then).
Subclasses that override ``on_train_start`` / ``on_save_checkpoint`` /
``on_load_checkpoint`` call ``super()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning import LightningModule
from torch import nn
from torchmetrics import MaxMetric, MinMetric

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
        self._best_resume: dict[str, torch.Tensor] = {}  # best-so-far values of the checkpoint resumed from

    def setup(self, stage: str) -> None:
        if self.compile and stage == "fit":
            self.net = torch.compile(self.net)

    def best_trackers(self) -> dict[str, MinMetric | MaxMetric]:
        """The best-so-far metrics by attribute name (``MinMetric`` / ``MaxMetric`` children)."""
        return {name: m for name, m in self.named_children() if isinstance(m, (MinMetric, MaxMetric))}

    def on_train_start(self) -> None:
        # Lightning's sanity check has run validation (and fed the trackers): start them clean, or from the
        # values the checkpoint of a resumed run holds
        for name, m in self.best_trackers().items():
            m.reset()
            if name in self._best_resume:
                m.update(self._best_resume[name].to(self.device))
        self._best_resume = {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["best_metrics"] = {name: m.compute().detach().cpu()
                                      for name, m in self.best_trackers().items() if m.update_count}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._best_resume = dict(checkpoint.get("best_metrics") or {})

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
