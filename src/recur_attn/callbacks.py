"""Lightning callbacks for reliable training: a numerics guard and RNG state in checkpoints.

``conf/callbacks/default.yaml`` installs them next to the ``ModelCheckpoint`` callbacks:
``last.ckpt`` + the best by ``optimized_metric`` at each validation, ``last.ckpt`` every
``callbacks.step_checkpoint.every_n_train_steps`` optimizer steps and at the end of each
epoch (:class:`EpochEndCheckpoint`).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

__all__ = ["EpochEndCheckpoint", "NonFiniteError", "NumericsGuard", "RNGStateCallback", "StepCheckpoint"]

GUARD_ACTIONS = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Training met a NaN or an infinity (loss, gradient or weight)."""


def _group_names(pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer) -> dict[int, tuple[int, str]]:
    """id(param) -> (param group index, parameter name)."""
    names = {id(p): n for n, p in pl_module.named_parameters()}
    out: dict[int, tuple[int, str]] = {}
    for gi, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            out[id(p)] = (gi, names.get(id(p), f"<unnamed {tuple(p.shape)}>"))
    return out


def _summarise(bad: list[tuple[int, str]], limit: int = 8) -> str:
    """'param group 0: net.rnn.weight_hh_l0, net.head.bias (+3 more)'."""
    by_group: dict[int, list[str]] = {}
    for gi, name in bad:
        by_group.setdefault(gi, []).append(name)
    parts = []
    for gi, names in sorted(by_group.items()):
        shown = ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")
        parts.append(f"param group {gi}: {shown}")
    return "; ".join(parts)


class NumericsGuard(Callback):
    """Stops (or skips) on a non-finite loss or gradient; never lets a NaN reach a checkpoint.

    Checks, at every training step:

    * the loss before ``backward`` (``on_before_backward``);
    * every gradient before the optimizer step (``on_before_optimizer_step``, i.e. before
      clipping and before the weights change; with float16 mixed precision an overflowing
      gradient is left to the GradScaler, which skips that step itself);
    * the weights after the step (``on_train_batch_end``; this callback runs before the
      checkpoint callbacks, which Lightning always runs last);
    * every tensor of a checkpoint before it is written (``on_save_checkpoint``).

    Args:
        action: ``"stop"`` raises :class:`NonFiniteError` naming the global step, epoch,
            batch and the parameters (by optimizer param group) with non-finite gradients;
            the weights are left as they were before the step and no checkpoint is written.
            ``"skip"`` drops the step instead (gradients set to None, so the optimizer leaves
            the weights and its moments alone), logs ``train/skipped_steps`` and goes on.
        max_consecutive_skips: with ``"skip"``, stop after this many skipped steps in a row.
        check_weights: also check the weights after each step (one pass over the parameters).
    """

    def __init__(self, action: str = "stop", max_consecutive_skips: int = 10, check_weights: bool = True) -> None:
        super().__init__()
        if action not in GUARD_ACTIONS:
            raise ValueError(f"NumericsGuard action must be one of {GUARD_ACTIONS}, got {action!r}")
        if isinstance(max_consecutive_skips, bool) or not isinstance(max_consecutive_skips, int) \
                or max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be an integer >= 1, got {max_consecutive_skips!r}")
        self.action = action
        self.max_consecutive_skips = max_consecutive_skips
        self.check_weights = bool(check_weights)
        self.skipped_steps = 0
        self._consecutive = 0
        self._bad_loss: float | None = None

    @staticmethod
    def _where(trainer: pl.Trainer) -> str:
        return (f"global step {trainer.global_step} (epoch {trainer.current_epoch}, "
                f"batch {trainer.fit_loop.epoch_loop.batch_idx})")

    def _skip_or_raise(self, message: str) -> None:
        if self.action == "stop":
            raise NonFiniteError(message + ". Training stopped; the last checkpoint is the last good state "
                                 "(set callbacks.numerics_guard.action=skip to drop such steps instead).")
        self._consecutive += 1
        self.skipped_steps += 1
        log.warning("%s: step skipped (%d in a row)", message, self._consecutive)
        if self._consecutive > self.max_consecutive_skips:
            raise NonFiniteError(f"{message}; more than {self.max_consecutive_skips} steps in a row were "
                                 f"non-finite, training stopped")

    # -- hooks ----------------------------------------------------------------------------
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        value = loss.detach()
        if not bool(torch.isfinite(value).all()):
            # kept until the optimizer step: with gradient accumulation, a later finite
            # micro-batch must not hide it
            if self._bad_loss is None:
                self._bad_loss = float(value.float().reshape(-1)[0])
            if self.action == "stop":
                self._skip_or_raise(f"non-finite training loss {self._bad_loss} at {self._where(trainer)}")

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        bad: list[tuple[int, str]] = []
        grads: list[torch.Tensor] = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads.append(p.grad)
        if grads:
            # one fused reduction first; name the offenders only when something is wrong
            finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        else:
            finite = True
        if finite and self._bad_loss is None:
            self._consecutive = 0
            return
        if self._bad_loss is None and getattr(trainer.precision_plugin, "scaler", None) is not None:
            # float16 mixed precision: the GradScaler skips overflowing steps and lowers its scale
            return
        names = _group_names(pl_module, optimizer)
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                    bad.append(names[id(p)])
        what = []
        if self._bad_loss is not None:
            what.append(f"non-finite training loss {self._bad_loss}")
        if bad:
            what.append(f"non-finite gradients in {_summarise(bad)}")
        message = " and ".join(what) + f" at {self._where(trainer)}"
        self._skip_or_raise(message)
        # skip: no update from this batch
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self._bad_loss = None
        pl_module.log("train/skipped_steps", float(self.skipped_steps), on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.check_weights:
            return
        bad = [n for n, p in pl_module.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            shown = ", ".join(bad[:8]) + (f" (+{len(bad) - 8} more)" if len(bad) > 8 else "")
            raise NonFiniteError(f"non-finite weights after the optimizer step at {self._where(trainer)}: {shown}. "
                                 f"Training stopped before any checkpoint of these weights was written.")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        bad = [k for k, v in checkpoint.get("state_dict", {}).items()
               if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise NonFiniteError(
                f"refusing to write a checkpoint at {self._where(trainer)}: non-finite values in "
                f"{', '.join(bad[:8])}; the previous checkpoint is kept"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))


def _rng_state() -> dict[str, Any]:
    """Every RNG state as tensors / ints only (loadable with weights_only=True)."""
    py = random.getstate()  # (version, tuple of 625 ints, gauss_next)
    np_state = np.random.get_state(legacy=True)  # ('MT19937', uint32[624], pos, has_gauss, cached)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python_version": int(py[0]),
        "python_state": torch.tensor(py[1], dtype=torch.int64),
        "python_gauss": py[2],
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_cached_gaussian": float(np_state[4]),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()),
                     state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            log.warning("checkpoint has CUDA RNG states for %d devices, this machine has %d: not restored",
                        len(cuda_states), torch.cuda.device_count())


class RNGStateCallback(Callback):
    """Saves the torch / numpy / python (and CUDA) RNG states in every checkpoint and puts
    them back when training resumes, so dropout masks and any other draws continue as in
    a run that was never stopped.

    The states are taken when the checkpoint is written and restored just before the next
    training batch runs (``on_train_batch_start``), so RNG use between loading and that
    batch (building the validation loader's iterator draws a seed from the global RNG)
    does not shift them.  Each rank stores its own state under its global rank.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        rank = 0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank()
        return {"rank": rank, "states": _rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict.get("states")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is not None:
            _set_rng_state(self._pending)
            self._pending = None


def _validation_follows(trainer: pl.Trainer) -> bool:
    """Whether Lightning validates right after the current training batch (asked at
    ``on_train_batch_end``, with the question Lightning itself asks next)."""
    loop = trainer.fit_loop.epoch_loop
    return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher))


class _LastCheckpoint(ModelCheckpoint):
    """Writes only ``last.ckpt``, at batch ends chosen by ``_due``; when Lightning validates
    right after that batch, the write waits for the end of that validation.

    Why: a checkpoint taken between a batch and the validation that follows it resumes
    with that validation skipped (Lightning fast-forwards over it), so the resumed run
    would not log it and its RNG would not be advanced by it.
    """

    def __init__(self, dirpath: str, **kwargs: Any) -> None:
        super().__init__(dirpath=dirpath, save_top_k=0, save_last=True, save_on_train_epoch_end=False,
                         enable_version_counter=False, **kwargs)
        self._deferred = False

    def _due(self, trainer: pl.Trainer) -> bool:
        raise NotImplementedError

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._should_skip_saving_checkpoint(trainer) or not self._due(trainer):
            return
        if _validation_follows(trainer):
            self._deferred = True
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._deferred and not trainer.sanity_checking:
            self._deferred = False
            if not self._should_skip_saving_checkpoint(trainer):
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        return


class StepCheckpoint(_LastCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps (after the validation of
    that step, when there is one)."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 100) -> None:
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int) \
                or every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be an integer >= 1, got {every_n_train_steps!r}")
        super().__init__(dirpath, every_n_epochs=0)
        self.every_n = every_n_train_steps

    @property
    def state_key(self) -> str:
        return f"StepCheckpoint{{every_n_train_steps={self.every_n}}}"

    def _due(self, trainer: pl.Trainer) -> bool:
        return trainer.global_step > 0 and trainer.global_step % self.every_n == 0


class EpochEndCheckpoint(_LastCheckpoint):
    """``last.ckpt`` after the last training batch of every epoch (after the validation
    that follows it, when there is one).

    Saved from the batch end rather than from ``on_train_epoch_end``: Lightning resumes a
    checkpoint taken at a batch end exactly (the next run starts the following epoch),
    whereas one taken in ``on_train_epoch_end`` makes it run one more batch as part of the
    finished epoch.  Args: ``dirpath`` (the checkpoint folder).
    """

    def __init__(self, dirpath: str) -> None:
        super().__init__(dirpath, every_n_epochs=0)

    @property
    def state_key(self) -> str:
        return "EpochEndCheckpoint"

    def _due(self, trainer: pl.Trainer) -> bool:
        return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
