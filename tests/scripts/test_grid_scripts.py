"""scripts/eval_addition.py and scripts/plot_runs.py on a tiny real grid_addition run."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recur_attn.cli.train import train

from conftest import load_script, set_paths


@pytest.fixture(scope="module")
def addition_run(hydra_compose, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("addition_run")
    overrides = ["experiment=grid_addition", "data.max_digits=3", "data.n_train=64", "data.n_val=16",
                 "data.n_test=16", "data.batch_size=8", "model.net.hidden_size=8", "trainer.max_steps=6",
                 "trainer.val_check_interval=3", "trainer.log_every_n_steps=1", "logger=csv",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                 "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "extras.print_config=false"]
    cfg = set_paths(hydra_compose("train", overrides), out)
    metrics, _ = train(cfg)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # what a launched run has
    return out, metrics


def test_eval_addition_matches_the_runs_test_accuracy(addition_run):
    run, metrics = addition_run
    r = load_script("eval_addition").evaluate(run)
    assert r["test_sums"] > 0 and 0.0 <= r["sum_acc"] <= r["char_acc"] <= 1.0
    assert r["char_acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_plot_runs_writes_a_figure(addition_run, tmp_path, capsys):
    run, metrics = addition_run
    out = tmp_path / "curves.png"
    load_script("plot_runs").main([str(run), "--labels", "tiny grid", "--metric", "acc", "--out", str(out)])
    assert out.stat().st_size > 1000
    table = capsys.readouterr().out
    assert "tiny grid" in table and f"{metrics['test/acc']:.6f}"[:5] in table
    with pytest.raises(SystemExit):
        load_script("plot_runs").main([str(run), "--labels", "a", "b", "--out", str(out)])
