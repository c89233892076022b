"""The Bernoulli NLL against a hand computation; the split average is over frames, not batches."""

import math

import pytest
import pytorch_lightning as pl
import torch
from functools import partial

from recur_attn.data.music import JSBChoralesDataModule, collate_rolls
from recur_attn.metrics import bernoulli_nll_per_frame, frame_mask
from recur_attn.models.density import DensityModel
from recur_attn.tasks.density import DensityTask


def test_nll_of_one_frame_by_hand():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(88, generator=g, dtype=torch.float64) * 0.98 + 0.01
    y = (torch.rand(88, generator=g) < 0.3).double()
    by_hand = -sum(math.log(pk) if yk else math.log(1 - pk) for pk, yk in zip(p.tolist(), y.tolist()))
    logits = torch.log(p) - torch.log1p(-p)
    got = bernoulli_nll_per_frame(logits[None], y[None])
    assert got.shape == (1,)
    assert got.item() == pytest.approx(by_hand, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        bernoulli_nll_per_frame(logits, y[:10])


def test_frame_mask():
    m = frame_mask(torch.tensor([1, 3]), 2, 3)
    assert m.tolist() == [[True, False, False], [True, True, True]]


class ConstantNet(torch.nn.Module):
    """Logits that depend on the frame's position only, so the NLL is easy to redo by hand."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.linspace(-2, 2, 88))

    def forward(self, x, lengths=None):
        return self.bias.expand(x.shape[0], x.shape[1], 88) + x  # (B, T, 88)


def test_split_metric_averages_over_all_frames_not_batches():
    g = torch.Generator().manual_seed(1)
    rolls = [(torch.rand(n, 88, generator=g) < 0.05).float() for n in (2, 7, 3)]
    task = DensityTask(ConstantNet(), optimizer=partial(torch.optim.SGD, lr=0.1))
    batches = [collate_rolls(rolls[:1]), collate_rolls(rolls[1:])]
    for b in batches:
        _, frames = task.model_step(b)  # outside a trainer: update the metric ourselves
        task.val_nll.update(frames)
    total, count = 0.0, 0
    for r in rolls:  # by hand: every true frame once, padding excluded
        x = torch.cat([torch.zeros(1, 88), r[:-1]])
        total += bernoulli_nll_per_frame(ConstantNet.forward(task.net, x[None]), r[None]).sum().item()
        count += len(r)
    assert count == 12
    assert task.val_nll.compute().item() == pytest.approx(total / count, rel=1e-6)
    batch_means = [task.model_step(b)[0].item() for b in batches]
    assert abs(sum(batch_means) / 2 - total / count) > 0.01  # a mean of batch means would differ


@pytest.mark.slow
def test_fit_and_test_on_jsb_logs_nll(tmp_path):
    torch.manual_seed(0)
    dm = JSBChoralesDataModule(batch_size=32)
    net = DensityModel(input_size=88, output_size=88, cell="lstm", hidden_size=8, input_noise=0.1)
    task = DensityTask(net, optimizer=partial(torch.optim.Adam, lr=1e-2))
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=1, limit_test_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(task, dm)
    m = trainer.callback_metrics
    assert {"train/loss", "val/nll", "val/nll_best"} <= set(m)
    assert 5 < m["val/nll"].item() < 62  # below the 88 * ln 2 = 61 nats of a coin per key
    (res,) = trainer.test(task, dm, verbose=False)
    assert res["test/nll"] == pytest.approx(res["test/loss"])


@pytest.mark.parametrize("experiment", ["jsb_lstm", "jsb_gru"])
def test_jsb_experiments_fast_dev_run(experiment, hydra_compose, tmp_path):
    """The JSB experiments through the real Hydra tree (jsb_gru: ReduceLROnPlateau on val/nll)."""
    from conftest import set_paths

    from recur_attn.cli.train import train

    quiet = ["debug=fdr", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
             "callbacks.rich_progress_bar=null", "extras.print_config=false", "logger=csv",
             "model.net.hidden_size=8"]
    cfg = set_paths(hydra_compose("train", [f"experiment={experiment}", *quiet]), tmp_path)
    metrics, objects = train(cfg)
    assert metrics["test/nll"] > 0
    sched = objects["trainer"].lr_scheduler_configs
    assert (len(sched) == 1 and sched[0].monitor == "val/loss") == (experiment == "jsb_gru")
