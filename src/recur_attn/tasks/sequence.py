"""Sequence regression and classification (one label a sequence, or one a step).

target:
  "regression"               y (B,) or (B, O) float; loss MSE; metric mse.
  "classification"           y (B,) long class index; logits (B, C); loss
                             cross-entropy; metric accuracy.
  "per_step_classification"  y (B, T) long, -100 where no label (padding, or
                             steps that are not scored); logits (B, T, C);
                             cross-entropy with ignore_index=-100; accuracy
                             over the labelled steps.

Batches are dicts ``{"x": (B, T, F), "y": ..., "lengths": (B,)}``. Logged:
``train/loss`` and ``train/mse`` or ``train/acc`` per step (the batch's value),
``val/...`` and ``test/...`` per epoch (over the whole split), and the best-so-far
``val/loss_best`` (and ``val/acc_best``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MeanSquaredError, MinMetric
from torchmetrics.classification import MulticlassAccuracy

from recur_attn.tasks.base import BaseTask

TARGETS = ("regression", "classification", "per_step_classification")
IGNORE_INDEX = -100


class SequenceTask(BaseTask):
    """Trains a sequence model (``recur_attn.models.SequenceModel`` or any net
    called as ``net(x, lengths)``) on one of the TARGETS.

    Args:
        net, optimizer, scheduler, scheduler_monitor, scheduler_interval, compile:
            see :class:`~recur_attn.tasks.base.BaseTask`.
        target: one of "regression", "classification", "per_step_classification".
        num_classes: classes for the accuracy (classification only); default:
            ``net.output_size``.
    """

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, target: str = "regression",
                 num_classes: int | None = None, scheduler_monitor: str = "val/loss",
                 scheduler_interval: str = "epoch", compile: bool = False) -> None:
        super().__init__(net, optimizer, scheduler, scheduler_monitor, scheduler_interval, compile)
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        # The partials are not saved: checkpoints stay loadable with weights_only=True
        # (the composed config, optimizer included, is logged by the train entry point).
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.target = target
        self.is_regression = target == "regression"
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_loss_best = MinMetric()
        if self.is_regression:
            self.train_metric, self.val_metric, self.test_metric = (MeanSquaredError() for _ in range(3))
            self.metric_name = "mse"
        else:
            n = num_classes if num_classes is not None else getattr(net, "output_size", None)
            if not isinstance(n, int) or n < 2:
                raise ValueError(
                    f"{target} needs num_classes >= 2 (or a net with an `output_size` >= 2), got {n!r}"
                )
            self.train_metric, self.val_metric, self.test_metric = (
                MulticlassAccuracy(num_classes=n, average="micro", ignore_index=IGNORE_INDEX) for _ in range(3)
            )
            self.metric_name = "acc"
            self.val_acc_best = MaxMetric()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(x, lengths)

    # ---- one batch ----------------------------------------------------------
    def model_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """-> (loss, predictions, targets) flattened for the metrics."""
        x, y = batch["x"], batch["y"]
        out = self(x, batch.get("lengths"))
        if self.is_regression:
            y = y.to(out.dtype)
            if out.shape != y.shape and out.shape[-1] == 1 and out.shape[:-1] == y.shape:
                out = out.squeeze(-1)  # (B, 1) -> (B,)
            if out.shape != y.shape:
                raise ValueError(f"regression: predictions {tuple(out.shape)} do not match targets {tuple(y.shape)}")
            return F.mse_loss(out, y), out.detach(), y
        if self.target == "classification":
            if out.dim() != 2 or y.shape != out.shape[:1]:
                raise ValueError(
                    f"classification expects logits (B, C) and labels (B,), got {tuple(out.shape)} and {tuple(y.shape)}"
                )
        elif out.dim() != 3 or y.shape != out.shape[:2]:
            raise ValueError(
                f"per_step_classification expects logits (B, T, C) and labels (B, T), got "
                f"{tuple(out.shape)} and {tuple(y.shape)}"
            )
        logits = out.reshape(-1, out.shape[-1])  # (N, C)
        labels = y.reshape(-1).long()  # (N,)
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        return loss, logits.detach(), labels

    def _shared_step(self, batch, split: str) -> Tensor:
        loss, preds, targets = self.model_step(batch)
        metric = getattr(self, f"{split}_metric")
        n = batch["x"].shape[0]
        if split == "train":
            # per step (every trainer.log_every_n_steps), under the plain names train/loss, train/mse
            value = metric(preds, targets)
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
            self.log(f"train/{self.metric_name}", value, on_step=True, on_epoch=False, prog_bar=False,
                     batch_size=n)
            return loss
        loss_m = getattr(self, f"{split}_loss")
        loss_m(loss.detach(), n)
        metric(preds, targets)
        self.log(f"{split}/loss", loss_m, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log(f"{split}/{self.metric_name}", metric, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=n)
        return loss

    def on_train_start(self) -> None:
        super().on_train_start()  # the best-so-far metrics (clean, or from a resumed checkpoint)
        # Lightning runs a sanity check of validation first
        self.val_loss.reset()
        self.val_metric.reset()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def on_train_epoch_end(self) -> None:
        self.train_metric.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.val_loss_best(self.val_loss.compute())
        self.log("val/loss_best", self.val_loss_best.compute(), sync_dist=True, prog_bar=False)
        if not self.is_regression:
            self.val_acc_best(self.val_metric.compute())
            self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=False)

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")
