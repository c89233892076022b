"""The part every task shares: optimizer/scheduler from Hydra partials, torch.compile.

A task is a LightningModule that receives a ready network (``net``, a plain
nn.Module built by Hydra) and the optimizer / scheduler as partials
(``_partial_: true`` in the config: called with the parameters, resp. the
optimizer, here). Subclasses define the loss, metrics and steps.

Metric states survive a resume, which torchmetrics (states out of ``state_dict``) and
Lightning (epoch aggregates not restored mid-epoch) leave to the module: checkpoints hold
the best-so-far metrics (every ``MinMetric`` / ``MaxMetric`` attribute, e.g.
``val_loss_best``) under ``best_metrics`` and the states of the training epoch's metrics
(the ``train_*`` metric attributes, logged at the epoch's end) under ``train_metrics``;
:meth:`BaseTask.on_train_start` starts them from there (clean in a fresh run: Lightning's
sanity check has run validation by then), and every training epoch starts its own metrics
clean, so a run resumed mid-epoch reports the whole epoch's training loss. Subclasses that
override ``on_train_start`` / ``on_train_epoch_start`` / ``on_save_checkpoint`` /
``on_load_checkpoint`` call ``super()``. Log training epoch values through such metrics: a
tensor logged with ``on_epoch=True`` would be averaged over the batches after a resume only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.utilities import move_data_to_device
from torch import nn
from torchmetrics import MaxMetric, Metric, MinMetric

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
        self._train_resume: dict[str, Any] = {}  # ... and its training metrics' states, with their epoch

    def setup(self, stage: str) -> None:
        if self.compile and stage == "fit":
            self.net = torch.compile(self.net)

    def best_trackers(self) -> dict[str, MinMetric | MaxMetric]:
        """The best-so-far metrics by attribute name (``MinMetric`` / ``MaxMetric`` children)."""
        return {name: m for name, m in self.named_children() if isinstance(m, (MinMetric, MaxMetric))}

    def train_metrics(self) -> dict[str, Metric]:
        """The training epoch's metrics by name: the torchmetrics modules under ``train_*`` attributes (a metric,
        or a ModuleDict of them)."""
        return {name: m for name, m in self.named_modules()
                if name.split(".")[0].startswith("train_") and isinstance(m, Metric)}

    def resumes_inside(self, epoch: int | None) -> bool:
        """In ``on_train_start``: whether this run goes on inside ``epoch``, the epoch of the checkpoint it resumed
        from (None: no checkpoint). Lightning does not start that epoch again (no ``on_train_epoch_start``), so
        what a checkpoint holds of the epoch's running state is to be put back; a checkpoint written after an
        epoch's last batch resumes in the next epoch, also without ``on_train_epoch_start``."""
        return epoch is not None and epoch == self.current_epoch

    def on_train_start(self) -> None:
        # Lightning's sanity check has run validation (and fed the trackers): start them clean, or from the
        # values the checkpoint of a resumed run holds; the training metrics from the batches before the
        # interruption when the run goes on inside their epoch
        for name, m in self.best_trackers().items():
            m.reset()
            if name in self._best_resume:
                m.update(self._best_resume[name].to(self.device))
        # the saved states are those of all processes (DDP): rank 0 alone takes them back
        same_epoch = self.resumes_inside(self._train_resume.get("epoch")) and self.global_rank == 0
        for name, m in self.train_metrics().items():
            m.reset()
            if same_epoch and name in self._train_resume["states"]:
                m.merge_state(move_data_to_device(self._train_resume["states"][name], self.device))
        self._best_resume, self._train_resume = {}, {}

    def on_train_epoch_start(self) -> None:
        for m in self.train_metrics().values():
            m.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["best_metrics"] = {name: m.compute().detach().cpu()
                                      for name, m in self.best_trackers().items() if m.update_count}
        train = {}
        for name, m in self.train_metrics().items():
            if m.update_count:
                with m.sync_context():  # every process's state summed (a no-op in one process)
                    train[name] = move_data_to_device(dict(m.metric_state), torch.device("cpu"))
        checkpoint["train_metrics"] = train

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._best_resume = dict(checkpoint.get("best_metrics") or {})
        self._train_resume = {"epoch": checkpoint.get("epoch"), "states": dict(checkpoint.get("train_metrics") or {})}

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
