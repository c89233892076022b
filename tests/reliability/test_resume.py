"""Nothing lost on interruption: resume from last.ckpt gives the uninterrupted run exactly.

Fast (default suite): in-process, a callback raises at a chosen step (as a kill would
stop the run there), then `ckpt_path=last` resumes in the same output folder; weights,
every final metric, the batches seen and the RNG draws equal those of an uninterrupted
run with the same seed.  Slow: the same with a real SIGKILL of a training subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.reliability._util import RESUME, ROOT, Crash, CrashAt, RecordBatches, run_train

_CACHE: dict = {}


def _reference(tmp_path_factory):
    if "ref" not in _CACHE:
        rec = RecordBatches()
        m, w, _ = run_train(tmp_path_factory.mktemp("ref"), RESUME, [rec])
        _CACHE["ref"] = (m, w, rec.rows)
    return _CACHE["ref"]


def test_same_seed_gives_bit_identical_metrics(tmp_path_factory):
    m1, w1, rows1 = _reference(tmp_path_factory)
    rec = RecordBatches()
    m2, w2, _ = run_train(tmp_path_factory.mktemp("again"), RESUME, [rec])
    assert m1 == m2  # every float bit for bit
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert rows1 == rec.rows
    assert "test/loss" in m1 and "val/loss" in m1


@pytest.mark.parametrize(("crash_at", "ckpt_step"), [(7, 6), (10, 10)])
def test_resume_from_step_checkpoint_is_exact(tmp_path_factory, crash_at, ckpt_step):
    """crash_at=7: last.ckpt is the step-6 checkpoint, mid-epoch (after batch 1 of epoch 1);
    crash_at=10: the epoch-end checkpoint of epoch 1 (global step 10; the step checkpoint
    at 9 came before it)."""
    ref_metrics, ref_weights, ref_rows = _reference(tmp_path_factory)
    out = tmp_path_factory.mktemp(f"crash{crash_at}")
    first = RecordBatches()
    with pytest.raises(Crash):
        run_train(out, RESUME, [first, CrashAt(crash_at)])
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == ckpt_step
    second = RecordBatches()
    metrics, weights, _ = run_train(out, RESUME + ["ckpt_path=last"], [second])
    assert metrics == ref_metrics
    assert all(torch.equal(ref_weights[k], weights[k]) for k in ref_weights)
    # the resumed run trains on exactly the batches the uninterrupted one trained on next
    resumed = second.rows
    assert resumed == ref_rows[ckpt_step:]
    assert first.rows[:crash_at] == ref_rows[:crash_at]


def test_resume_after_validation_checkpoint_is_exact(tmp_path_factory):
    """Crash right after the validation at step 8 (last.ckpt written at validation end)."""
    ref_metrics, ref_weights, _ = _reference(tmp_path_factory)
    out = tmp_path_factory.mktemp("crash8")
    with pytest.raises(Crash):
        run_train(out, RESUME, [CrashAt(8)])
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    metrics, weights, _ = run_train(out, RESUME + ["ckpt_path=last"])
    assert metrics == ref_metrics
    assert all(torch.equal(ref_weights[k], weights[k]) for k in ref_weights)


def test_best_so_far_metric_survives_a_resume(tmp_path_factory):
    """A learning rate that makes the loss grow: the best validation loss (step 4) comes before the crash
    (step 7), so a resumed run that forgot it would report a later, worse one as val/loss_best."""
    overrides = RESUME + ["model.optimizer.lr=30.0"]
    ref, _, _ = run_train(tmp_path_factory.mktemp("ref_lr30"), overrides)
    assert ref["val/loss_best"] < ref["val/loss"]  # the best is an early one
    out = tmp_path_factory.mktemp("crash_lr30")
    with pytest.raises(Crash):
        run_train(out, overrides, [CrashAt(7)])
    assert "val_loss_best" in torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["best_metrics"]
    metrics, _, _ = run_train(out, overrides + ["ckpt_path=last"])
    assert metrics == ref


# ---- a real SIGKILL -----------------------------------------------------------------------
def _cmd(run_dir: Path, extra: list[str]) -> list[str]:
    over = [o for o in RESUME if not o.startswith(("trainer.max_steps", "callbacks.step_checkpoint"))]
    return [sys.executable, "-m", "recur_attn.cli.train", *over, "trainer.max_steps=60",
            "callbacks.step_checkpoint.every_n_train_steps=2", "data.n_train=160",
            f"hydra.run.dir={run_dir}", *extra]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cmd(ref_dir, []), cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(_cmd(run_dir, []), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            break
        time.sleep(0.02)
    time.sleep(0.3)  # a few more steps
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()
    step = torch.load(last, weights_only=True)["global_step"]
    assert 0 < step < 60
    subprocess.run(_cmd(run_dir, ["ckpt_path=last"]), cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=600)
    import json

    ref = json.loads((ref_dir / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    keys = [k for k in ref if k.startswith(("val/", "test/", "train/")) or k == "global_step"]
    assert keys and {k: got[k] for k in keys} == {k: ref[k] for k in keys}
    w_ref = torch.load(ref_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    w_got = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(w_ref[k], w_got[k]) for k in w_ref)


def test_kill_during_validation_at_a_step_checkpoint_step(tmp_path_factory):
    """Step 12 is both a step-checkpoint step (every 3) and a validation step (every 4): the
    step checkpoint waits for the validation, so a kill inside it resumes from the previous
    checkpoint (the end of epoch 1, step 10) and the run still ends exactly as the reference."""
    from tests.reliability._util import CrashInValidation

    ref_metrics, ref_weights, _ = _reference(tmp_path_factory)
    out = tmp_path_factory.mktemp("crashval12")
    with pytest.raises(Crash):
        run_train(out, RESUME, [CrashInValidation(12)])
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 10
    metrics, weights, _ = run_train(out, RESUME + ["ckpt_path=last"])
    assert metrics == ref_metrics
    assert all(torch.equal(ref_weights[k], weights[k]) for k in ref_weights)
