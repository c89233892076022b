"""SequenceTask: losses equal the torch functions, metrics, ignore_index, optimizer/scheduler wiring."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from recur_attn.models import SequenceModel
from recur_attn.tasks import SequenceTask

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def _task(target, output_size, readout="last", **kw):
    torch.manual_seed(0)
    net = SequenceModel(input_size=3, output_size=output_size, cell="gru", hidden_size=6, readout=readout)
    return SequenceTask(net=net, optimizer=ADAM, target=target, **kw)


def test_regression_loss_is_mse_of_squeezed_output():
    t = _task("regression", 1)
    batch = {"x": torch.randn(5, 4, 3), "y": torch.randn(5), "lengths": torch.tensor([4, 4, 3, 2, 1])}
    loss, preds, y = t.model_step(batch)
    expected = F.mse_loss(t.net(batch["x"], batch["lengths"]).squeeze(-1), batch["y"])
    torch.testing.assert_close(loss, expected)
    assert preds.shape == (5,)


def test_classification_loss_is_cross_entropy():
    t = _task("classification", 4)
    batch = {"x": torch.randn(6, 5, 3), "y": torch.tensor([0, 1, 2, 3, 1, 0]), "lengths": torch.full((6,), 5)}
    loss, logits, labels = t.model_step(batch)
    torch.testing.assert_close(loss, F.cross_entropy(t.net(batch["x"], batch["lengths"]), batch["y"]))
    acc = (logits.argmax(-1) == labels).float().mean()
    t.val_metric(logits, labels)
    torch.testing.assert_close(t.val_metric.compute(), acc)


def test_per_step_classification_ignores_minus_100():
    t = _task("per_step_classification", 3, readout="all")
    y = torch.randint(0, 3, (2, 5))
    y[:, :3] = -100  # only the last two steps are scored
    batch = {"x": torch.randn(2, 5, 3), "y": y, "lengths": torch.full((2,), 5)}
    loss, logits, labels = t.model_step(batch)
    out = t.net(batch["x"], batch["lengths"])
    torch.testing.assert_close(loss, F.cross_entropy(out[:, 3:].reshape(-1, 3), y[:, 3:].reshape(-1)))
    t.val_metric(logits, labels)
    manual = (out[:, 3:].argmax(-1) == y[:, 3:]).float().mean()
    torch.testing.assert_close(t.val_metric.compute(), manual)


def test_shape_mismatch_is_reported():
    t = _task("classification", 4)
    with pytest.raises(ValueError, match=r"classification expects logits \(B, C\) and labels \(B,\)"):
        t.model_step({"x": torch.randn(2, 3, 3), "y": torch.zeros(2, 3, dtype=torch.long)})


def test_bad_target_and_classes():
    with pytest.raises(ValueError, match="target must be one of"):
        _task("ranking", 1)
    with pytest.raises(ValueError, match="num_classes >= 2"):
        _task("classification", 1)
    with pytest.raises(TypeError, match="Hydra partial"):
        SequenceTask(net=torch.nn.Linear(1, 1), optimizer=torch.optim.Adam([torch.zeros(1)]))


def test_optimizer_and_scheduler_partials():
    sched = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=10)
    t = _task("regression", 1, scheduler=sched, scheduler_interval="step")

    class _T:  # the bits of a Trainer configure_optimizers reads
        model = t

    t._trainer = _T()
    conf = t.configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.Adam)
    assert conf["optimizer"].param_groups[0]["lr"] == 1e-3
    assert isinstance(conf["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert conf["lr_scheduler"]["interval"] == "step" and conf["lr_scheduler"]["monitor"] == "val/loss"


def test_hparams_hold_no_objects():
    t = _task("regression", 1)
    assert set(t.hparams) == {"target", "num_classes", "scheduler_monitor", "scheduler_interval", "compile"}
