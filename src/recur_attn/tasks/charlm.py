"""Character language modelling with truncated BPTT and a carried state.

Batches ``{"x": (B, T) long, "y": (B, T) long (-100 = no target), "reset": (B,) bool}``
come in stream order (``recur_attn.data.text``): row b of a batch continues row b
of the previous one. The task keeps one recurrent state per split; before each
batch it zeroes the rows flagged ``reset`` (a new document or a new stream),
feeds the state to the net, and keeps the final state *detached* for the next
batch: gradients flow within a chunk of T steps only (truncated BPTT). The
state starts from zero at every epoch. Checkpoints hold the training state carried at
the time (``charlm_train_state``), which a run resumed mid-epoch continues from.

Logged: ``{split}/loss`` (cross-entropy, nats per character, averaged over all
predicted characters of the split), ``{split}/bpc`` (the same in bits per
character) and ``val/bpc_best``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor, nn
from torchmetrics import MeanMetric, MinMetric

from recur_attn.metrics import LN2
from recur_attn.tasks.base import BaseTask

IGNORE_INDEX = -100


class CharLMTask(BaseTask):
    """Args: see :class:`~recur_attn.tasks.base.BaseTask`. The net is called as
    ``net(x, state) -> (logits, state)`` and must offer ``reset_state`` and
    ``detach_state`` (``recur_attn.models.CharLM``).

    Checkpoints also hold ``charlm_config`` (the net's arguments) and ``vocab``
    (the characters) so that ``recur-attn-sample`` can rebuild the model alone.
    """

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, scheduler_monitor: str = "val/loss",
                 scheduler_interval: str = "epoch", compile: bool = False) -> None:
        super().__init__(net, optimizer, scheduler, scheduler_monitor, scheduler_interval, compile)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        for s in ("train", "val", "test"):
            setattr(self, f"{s}_ce", MeanMetric())
            setattr(self, f"{s}_bpc", MeanMetric())
        self.val_bpc_best = MinMetric()
        self.states: dict[str, Any] = {}
        self._resume_state: tuple[Any, Any] = (None, None)  # (epoch, carried training state) of a resumed checkpoint
        self.vocab: list[str] | None = None

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "vocab"):
            self.vocab = list(dm.vocab.itos)
        super().setup(stage)

    def forward(self, x: Tensor, state=None):
        return self.net(x, state)

    def step_with_state(self, batch: dict[str, Tensor], split: str) -> tuple[Tensor, Tensor]:
        """Run one chunk with the carried state of ``split`` -> (loss, CE of each target (N,))."""
        net = self.net._orig_mod if hasattr(self.net, "_orig_mod") else self.net
        state = net.reset_state(self.states.get(split), batch["reset"])
        logits, state = self(batch["x"], state)  # (B, T, V)
        self.states[split] = net.detach_state(state)
        y = batch["y"]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none",
                             ignore_index=IGNORE_INDEX)  # (B*T,)
        valid = y.reshape(-1) != IGNORE_INDEX
        ce = ce[valid]
        loss = ce.mean() if ce.numel() else logits.sum() * 0.0
        return loss, ce.detach()

    def _shared_step(self, batch, split: str) -> Tensor:
        loss, ce = self.step_with_state(batch, split)
        n = int(ce.numel())
        if n:
            getattr(self, f"{split}_ce").update(ce)
            getattr(self, f"{split}_bpc").update(ce / LN2)
        self.log(f"{split}/loss", getattr(self, f"{split}_ce"), on_step=False, on_epoch=True,
                 prog_bar=True, batch_size=max(n, 1))
        self.log(f"{split}/bpc", getattr(self, f"{split}_bpc"), on_step=False, on_epoch=True,
                 prog_bar=True, batch_size=max(n, 1))
        if split == "train":
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, batch_size=max(n, 1))
        return loss

    def on_train_start(self) -> None:
        super().on_train_start()  # the best-so-far metrics
        self.val_ce.reset()
        self.val_bpc.reset()
        # a run resumed mid-epoch continues the streams with the state its checkpoint carried (the training
        # loader resumes at the next chunk)
        (epoch, state), self._resume_state = self._resume_state, (None, None)
        if state is not None and self.resumes_inside(epoch):
            self.states["train"] = move_data_to_device(state, self.device)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()  # the training metrics
        self.states.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self.states.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self.states.pop("test", None)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.val_bpc_best(self.val_bpc.compute())
        self.log("val/bpc_best", self.val_bpc_best.compute(), sync_dist=True)

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        net = self.net._orig_mod if hasattr(self.net, "_orig_mod") else self.net
        config = getattr(net, "config", None)
        if config is not None:
            checkpoint["charlm_config"] = config
        if self.vocab is not None:
            checkpoint["vocab"] = list(self.vocab)
        checkpoint["charlm_train_state"] = move_data_to_device(self.states.get("train"), torch.device("cpu"))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._resume_state = (checkpoint.get("epoch"), checkpoint.get("charlm_train_state"))

