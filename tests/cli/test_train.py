"""The train / eval entry points on the real config: every cell and every long-lag data set
train on CPU, the returned metric, metrics.json, checkpoints, eval, bad input, a joblib multirun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from recur_attn.cells import CELLS
from recur_attn.cli.eval import evaluate
from recur_attn.cli.train import get_metric_value, train

from conftest import FAST_DATA, ROOT

FDR = {"trainer.fast_dev_run": True}


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_fast_dev_run_every_cell(make_cfg, cell):
    cfg = make_cfg("adding", cell=cell, overrides=FDR)
    metrics, obj = train(cfg)
    assert obj["model"].net.rnn.cell_name == cell
    assert torch.isfinite(torch.tensor(metrics["test/mse"]))
    assert {"train/loss", "val/loss", "val/mse", "test/loss", "test/mse"} <= set(metrics)


@pytest.mark.parametrize("data", sorted(FAST_DATA))
def test_fast_dev_run_every_dataset(make_cfg, data):
    cfg = make_cfg(data, overrides=FDR)
    metrics, obj = train(cfg)
    dims = obj["datamodule"].dims
    net = obj["model"].net
    assert (net.input_size, net.output_size, net.readout) == (dims["input_size"], dims["output_size"],
                                                             dims["readout"])
    key = "test/mse" if dims["target"] == "regression" else "test/acc"
    assert key in metrics


def test_train_returns_metric_writes_metrics_json_and_checkpoints(make_cfg, tmp_path):
    cfg = make_cfg("adding", overrides={"trainer.max_steps": 6, "trainer.val_check_interval": 3})
    metrics, obj = train(cfg)
    value = get_metric_value(metrics, cfg.optimized_metric)
    assert value == metrics["val/loss"]
    assert metrics["val/loss_best"] <= metrics["val/loss"] + 1e-7
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test/mse"] == pytest.approx(metrics["test/mse"])
    assert saved["global_step"] == 6 and saved["model.net.cell"] == "lstm"
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 2  # last + best
    # every checkpoint loads without unpickling objects
    for p in (tmp_path / "checkpoints").glob("*.ckpt"):
        ck = torch.load(p, weights_only=True)
        assert ck["global_step"] in (3, 6)
    assert saved["test_ckpt"].endswith(".ckpt") and "last" not in Path(saved["test_ckpt"]).name
    # the csv logger wrote per-step train and per-validation val rows
    csv = next((tmp_path / "csv").rglob("metrics.csv")).read_text()
    assert "train/loss" in csv and "val/mse" in csv
    with pytest.raises(KeyError, match="val/nope.*val/loss"):
        get_metric_value(metrics, "val/nope")


def test_eval_reproduces_test_metrics_of_a_checkpoint(make_cfg, compose_eval, tmp_path):
    cfg = make_cfg("adding", overrides={"trainer.max_steps": 4})
    metrics, obj = train(cfg)
    best = obj["trainer"].checkpoint_callback.best_model_path
    # a checkpoint outside a run folder: data and model come from the eval command line
    ecfg = compose_eval(["data.seq_len=12", "data.n_train=64", "data.n_val=32", "data.n_test=32",
                         "data.batch_size=16", "model.net.hidden_size=8", f"ckpt_path={best}"])
    emetrics, _ = evaluate(ecfg)
    assert emetrics["test/mse"] == pytest.approx(metrics["test/mse"], rel=1e-5)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["test/mse"] == pytest.approx(
        emetrics["test/mse"])


def test_eval_takes_data_and_model_from_the_run_folder(make_cfg, compose_eval, tmp_path):
    cfg = make_cfg("parity", overrides={"trainer.max_steps": 4})
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    metrics, obj = train(cfg)
    best = obj["trainer"].checkpoint_callback.best_model_path
    ecfg = compose_eval([f"ckpt_path={best}"])  # eval.yaml's defaults: adding, hidden 128
    emetrics, eobj = evaluate(ecfg)
    assert type(eobj["datamodule"]).__name__ == "ParityDataModule" and eobj["model"].net.hidden_size == 8
    assert emetrics["test/acc"] == pytest.approx(metrics["test/acc"])


def test_unknown_cell_key_fails_before_training(make_cfg):
    cfg = make_cfg("adding", overrides={"model.net.cell": "lsmt"})
    with pytest.raises(ValueError, match=r"model\.net\.cell='lsmt' is not a known cell; valid names: .*lstm"):
        train(cfg)


@pytest.mark.parametrize("value", [0, -1])
def test_hidden_size_not_positive_fails_naming_the_key(make_cfg, value):
    cfg = make_cfg("adding", overrides={"model.net.hidden_size": value})
    with pytest.raises(ValueError, match=rf"model\.net\.hidden_size must be a positive integer, got {value}"):
        train(cfg)


def test_unfilled_key_is_named(make_cfg):
    cfg = make_cfg("adding", overrides={"model.net.embedding_size": "???"})
    with pytest.raises(ValueError, match=r"model\.net\.embedding_size.*provides \[.*input_size"):
        train(cfg)


def test_regressor_on_a_classification_task_is_rejected(make_cfg):
    cfg = make_cfg("parity")
    with open_dict(cfg):
        cfg.model.target = "regression"
    with pytest.raises(ValueError, match="model.target='regression' but the data gives target='classification'"):
        train(cfg)


def test_missing_checkpoint_file_is_named(make_cfg):
    cfg = make_cfg("adding", overrides={"ckpt_path": "/no/such.ckpt"})
    with pytest.raises(FileNotFoundError, match="/no/such.ckpt"):
        train(cfg)


def test_resume_last_without_a_last_checkpoint_says_how(make_cfg):
    """ckpt_path=last in a fresh run folder is an error, not a silent fresh start."""
    cfg = make_cfg("adding", overrides={"ckpt_path": "last"})
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no last.ckpt in .*hydra.run.dir"):
        train(cfg)


def _run_cli(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    return subprocess.run([sys.executable, "-m", "recur_attn.cli.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


TINY_CLI = ["data.seq_len=8", "data.n_train=32", "data.n_val=16", "data.n_test=16", "data.batch_size=16",
            "model.net.hidden_size=4", "trainer.max_steps=2", "trainer.val_check_interval=1",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "extras.print_config=false",
            "num_threads=1"]


def test_joblib_multirun_two_jobs(tmp_path):
    r = _run_cli(["-m", "model/cell=lstm,gru", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  f"paths.log_dir={tmp_path}", *TINY_CLI], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted((tmp_path / "train" / "multiruns").glob("*/[0-9]"))
    assert [j.name for j in jobs] == ["0", "1"]
    cells = set()
    for j in jobs:
        m = json.loads((j / "metrics.json").read_text())
        cells.add(m["model.net.cell"])
        assert "test/mse" in m and (j / "checkpoints" / "last.ckpt").is_file()
    assert cells == {"lstm", "gru"}


@pytest.mark.slow  # a subprocess; the same check in-process: tests/test_configs.py
def test_cli_unknown_cell_group_lists_valid_names(tmp_path):
    r = _run_cli(["model/cell=lsmt", f"paths.log_dir={tmp_path}"], cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "lsmt" in r.stderr and "cifg" in r.stderr and "clockwork" in r.stderr


@pytest.mark.slow
def test_wandb_offline_run_finishes(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_cfg("adding", overrides=["logger=wandb"])
    with open_dict(cfg):
        cfg.trainer.max_steps = 2
    metrics, obj = train(cfg)
    import wandb

    assert wandb.run is None  # finished by train()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


@pytest.mark.slow
def test_optuna_search_returns_best(tmp_path):
    r = _run_cli(["hparams_search=adding_optuna", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.sampler.n_startup_trials=2", f"paths.log_dir={tmp_path}", *TINY_CLI],
                 cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    best = next((tmp_path / "train" / "multiruns").glob("*/optimization_results.yaml")).read_text()
    assert "best_value" in best


@pytest.mark.slow
def test_submitit_local_multirun(tmp_path):
    r = _run_cli(["-m", "model/cell=lstm,rnn_tanh", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5",
                  f"paths.log_dir={tmp_path}", *TINY_CLI], cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / "train" / "multiruns").glob("*/[0-9]/metrics.json"))) == 2
