"""The numerics guard: a NaN loss or gradient stops training naming the step and the
parameters (or the step is skipped), and no NaN ever reaches a checkpoint."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from recur_attn.callbacks import NonFiniteError, NumericsGuard
from tests.reliability._util import FAST, run_train

BASE = FAST + ["trainer.max_steps=8", "trainer.val_check_interval=4",
               "callbacks.step_checkpoint.every_n_train_steps=3"]


class NaNInput(pl.Callback):
    """Puts a NaN into the inputs of the batch of global step `at`."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at:
            batch["x"][0, 0, 0] = float("nan")


class NaNGradient(pl.Callback):
    """Makes the gradient of one parameter NaN at global step `at` (the loss stays finite)."""

    def __init__(self, at: int, name: str) -> None:
        self.at, self.name = at, name

    def on_train_start(self, trainer, pl_module):
        p = dict(pl_module.named_parameters())[self.name]
        p.register_hook(lambda g: g * float("nan") if trainer.global_step == self.at else g)


def _finite(state_dict):
    return all(torch.isfinite(v).all() for v in state_dict.values() if v.is_floating_point())


def test_nan_loss_stops_with_step_and_keeps_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite training loss nan at global step 5 \(epoch 1, batch 0\)"):
        run_train(tmp_path, BASE, [NaNInput(5)])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 5  # the last good state (end of epoch 0); nothing after the NaN
    assert _finite(ckpt["state_dict"])


def test_nan_gradient_names_parameter_group(tmp_path):
    with pytest.raises(NonFiniteError) as info:
        run_train(tmp_path, BASE, [NaNGradient(2, "net.head.bias")])
    msg = str(info.value)
    assert "non-finite gradients in param group 0: net.head.bias" in msg
    assert "global step 2" in msg
    assert "net.head.weight" not in msg  # only the offender is named
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # first checkpoint would be at step 3


def test_skip_mode_drops_the_step_and_goes_on(tmp_path):
    metrics, weights, objects = run_train(tmp_path, BASE + ["callbacks.numerics_guard.action=skip"],
                                          [NaNInput(5)])
    guard = next(c for c in objects["callbacks"] if isinstance(c, NumericsGuard))
    assert guard.skipped_steps == 1
    assert objects["trainer"].global_step == 8
    assert _finite(weights)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in metrics.items() if k.startswith(("val/", "test/")))


def test_guard_refuses_to_write_nan_checkpoint(tmp_path):
    guard = NumericsGuard()

    class T:
        global_step, current_epoch = 3, 0

        class fit_loop:
            class epoch_loop:
                batch_idx = 2

    with pytest.raises(NonFiniteError, match="refusing to write a checkpoint.*w"):
        guard.on_save_checkpoint(T, None, {"state_dict": {"w": torch.tensor([1.0, float("inf")])}})
    guard.on_save_checkpoint(T, None, {"state_dict": {"w": torch.ones(2)}})  # fine


def test_guard_arguments_are_checked():
    with pytest.raises(ValueError, match="action must be one of"):
        NumericsGuard(action="ignore")
    with pytest.raises(ValueError, match="max_consecutive_skips"):
        NumericsGuard(max_consecutive_skips=0)
