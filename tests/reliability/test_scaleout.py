"""Scale-out on existing engines (slow: each test starts training subprocesses).

* trainer=ddp_cpu with 2 processes (gloo) agrees with a single process that sees the
  same global batches (DDP with 1 process: the same DistributedSampler permutation);
* the Optuna sweeper runs a small study and reports the best value of its trials;
* hydra/launcher=submitit_local and the joblib launcher run a multirun, one output
  folder per job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.reliability._util import ROOT

FAST = [
    "data=adding", "model=seq_regressor", "data.seq_len=10", "data.n_train=64", "data.n_val=32",
    "data.n_test=32", "model.net.hidden_size=8", "trainer.max_steps=6", "trainer.val_check_interval=3",
    "trainer.max_epochs=-1", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
    "extras.print_config=false", "num_threads=1",
]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "recur_attn.cli.train", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_ddp_cpu_two_processes_match_one_process_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _train(FAST + ["trainer=ddp_cpu", "trainer.devices=1", "data.batch_size=16", f"hydra.run.dir={one}"])
    _train(FAST + ["trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=8", f"hydra.run.dir={two}"])
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    keys = [k for k in m1 if k.startswith(("val/", "test/"))]
    assert keys and m1["global_step"] == m2["global_step"] == 6
    for k in keys:
        assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-6), k
    # rank 0 alone writes checkpoints and logs: one metrics file, one csv folder
    assert (two / "checkpoints" / "last.ckpt").is_file()
    assert len(list((two / "csv").rglob("metrics.csv"))) == 1


@pytest.mark.slow
def test_optuna_small_study_returns_best_value(tmp_path):
    sweep = tmp_path / "sweep"
    _train(["-m", "hparams_search=adding_optuna", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2", f"hydra.sweep.dir={sweep}", "logger=csv",
            *[o for o in FAST if not o.startswith("model.net.hidden_size")]])  # a searched parameter
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    trials = [json.loads(p.read_text())["val/loss_best"] for p in sweep.glob("*/metrics.json")]
    assert len(trials) == 3
    assert result["best_value"] == pytest.approx(min(trials))
    assert set(result["best_params"]) == {"model.optimizer.lr", "model.net.hidden_size"}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["submitit_local", "local"])
def test_multirun_launchers_one_folder_per_job(tmp_path, launcher):
    sweep = tmp_path / "sweep"
    extra = ["hydra.launcher.timeout_min=10"] if launcher == "submitit_local" else []
    _train(["-m", f"hydra/launcher={launcher}", "model/cell=lstm,gru", f"hydra.sweep.dir={sweep}", *extra, *FAST])
    jobs = sorted(p.parent.name for p in sweep.glob("*/metrics.json"))
    assert jobs == ["0", "1"]
    cells = {json.loads((sweep / j / "metrics.json").read_text())["model.net.cell"] for j in jobs}
    assert cells == {"lstm", "gru"}


@pytest.mark.slow
def test_ddp_rank_killed_then_resume(tmp_path):
    """Rank 1 of a ddp_cpu run is SIGKILLed before its 5th step: the run stops with an error
    (no hang), last.ckpt (written by rank 0) is whole, and ckpt_path=last finishes the run."""
    run = tmp_path / "run"
    env = {**ENV, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    args = FAST + ["trainer=ddp_cpu", "trainer.devices=2", "data.batch_size=8",
                   "callbacks.step_checkpoint.every_n_train_steps=2", f"hydra.run.dir={run}"]
    proc = subprocess.run([sys.executable, "-m", "recur_attn.cli.train", *args,
                           "+callbacks.kill_rank._target_=tests.reliability._faults.KillRank",
                           "+callbacks.kill_rank.rank=1", "+callbacks.kill_rank.at_step=4"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode != 0
    assert not (run / "metrics.json").exists()
    from recur_attn.utils.checkpoint import load_checkpoint

    step = load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    assert step in (3, 4)  # rank 0's validation checkpoint after step 3 or step checkpoint after step 4
    _train(args + ["ckpt_path=last"])
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 6
