"""Next-frame density modelling of binary sequences (polyphonic music).

Batches ``{"x": (B, T, K), "y": (B, T, K), "lengths": (B,)}`` (see
``recur_attn.data.music``); the net maps x to logits (B, T, K). The loss and the
metric are the Bernoulli NLL summed over the K keys, in nats per frame; the
epoch metric ``{split}/nll`` is averaged over all true frames of the split (the
convention of Boulanger-Lewandowski et al. 2012 and Chung et al. 2014), not over
batches. Logged: ``train/loss``, ``train/nll``, ``val/loss``, ``val/nll``,
``val/nll_best``, ``test/loss``, ``test/nll`` (``loss`` and ``nll`` are the same
number; ``loss`` is what the default callbacks monitor).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, MinMetric

from recur_attn.metrics import bernoulli_nll_per_frame, frame_mask
from recur_attn.tasks.base import BaseTask


class DensityTask(BaseTask):
    """Args: see :class:`~recur_attn.tasks.base.BaseTask`; the net is called as ``net(x, lengths)``."""

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, scheduler_monitor: str = "val/loss",
                 scheduler_interval: str = "epoch", compile: bool = False) -> None:
        super().__init__(net, optimizer, scheduler, scheduler_monitor, scheduler_interval, compile)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.train_nll, self.val_nll, self.test_nll = MeanMetric(), MeanMetric(), MeanMetric()
        self.val_nll_best = MinMetric()

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(x, lengths)

    def model_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """-> (loss: mean NLL over the batch's true frames, the NLL of each true frame (N,))."""
        x, y, lengths = batch["x"], batch["y"], batch.get("lengths")
        logits = self(x, lengths)  # (B, T, K)
        nll = bernoulli_nll_per_frame(logits, y)  # (B, T)
        mask = frame_mask(lengths, nll.shape[0], nll.shape[1], device=nll.device)
        frames = nll[mask]  # (N,)
        return frames.mean(), frames.detach()

    def _shared_step(self, batch, split: str) -> Tensor:
        loss, frames = self.model_step(batch)
        metric = getattr(self, f"{split}_nll")
        metric.update(frames)
        on_step = split == "train"
        n = int(frames.numel())
        self.log(f"{split}/loss", metric, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        self.log(f"{split}/nll", metric, on_step=False, on_epoch=True, prog_bar=False, batch_size=n)
        if on_step:
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, batch_size=n)
        return loss

    def on_train_start(self) -> None:
        super().on_train_start()  # the best-so-far metrics
        self.val_nll.reset()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.val_nll_best(self.val_nll.compute())
        self.log("val/nll_best", self.val_nll_best.compute(), sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")
