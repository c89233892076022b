"""Exact resume for the two tasks whose training order is not a plain shuffled loader.

* Piano rolls (``data=jsb model=density``): the training loader shuffles with a seeded
  generator and resumes at the exact batch (it drew its order from the global RNG before).
* Character LM (``data=chars model=charlm``): batches come in stream order and the task
  carries the recurrent state from one TBPTT chunk to the next; the checkpoint holds that
  state and the loader's position, so a run resumed mid-epoch continues the same streams
  (it restarted the epoch's batches from a zero state before).

Each run crashes before a step (as a kill would), resumes from ``last.ckpt`` (a mid-epoch
step checkpoint) and must end with the uninterrupted run's weights and metrics, bit for bit,
having trained on the same batches.
"""

from __future__ import annotations

import pytest
import torch

from tests.reliability._util import FAST, Crash, CrashAt, RecordBatches, run_train

GENERAL = [o for o in FAST if not o.startswith(("data", "model"))]
STEPS = ["trainer.max_steps=13", "trainer.val_check_interval=4", "callbacks.step_checkpoint.every_n_train_steps=3",
         "trainer.limit_val_batches=2", "test=false"]
# 229 training chorales in batches of 32: 8 batches an epoch, so 13 steps cross an epoch boundary
JSB = GENERAL + STEPS + ["data=jsb", "model=density", "data.batch_size=32", "model.net.hidden_size=8",
                         "model.net.num_layers=2", "model.net.dropout=0.3", "model.net.input_noise=0.1"]


def _text(tmp_path):
    """~800 characters in two documents: 4 streams of 20-character chunks."""
    paths = []
    for d in range(2):
        p = tmp_path / f"doc{d}.txt"
        p.write_text("".join(f"line {i * (d + 3) % 17}: say({i}, [{d}])\n" for i in range(20)))
        paths.append(str(p))
    return paths


def _chars(tmp_path):
    files = ",".join(_text(tmp_path))
    return GENERAL + STEPS + ["data=chars", "model=charlm", f"data.files=[{files}]", "data.split=[0.8,0.1,0.1]",
                              "data.seq_len=20", "data.batch_size=4", "model.net.hidden_size=8",
                              "model.net.embedding_size=4", "model.net.num_layers=2"]


def _crash_and_resume(tmp_path_factory, overrides, crash_at=7, ckpt_step=6):
    ref_rec = RecordBatches()
    ref_metrics, ref_weights, _ = run_train(tmp_path_factory.mktemp("ref"), overrides, [ref_rec])
    out = tmp_path_factory.mktemp("crash")
    with pytest.raises(Crash):
        run_train(out, overrides, [CrashAt(crash_at)])
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == ckpt_step
    rec = RecordBatches()
    metrics, weights, _ = run_train(out, overrides + ["ckpt_path=last"], [rec])
    assert rec.rows == ref_rec.rows[ckpt_step:]  # the same batches, in the same order, with the same RNG
    assert metrics == ref_metrics
    for k in ref_weights:
        assert torch.equal(ref_weights[k], weights[k]), k


def test_piano_roll_run_resumes_exactly(tmp_path_factory):
    _crash_and_resume(tmp_path_factory, JSB)


@pytest.mark.parametrize(("crash_at", "ckpt_step"), [(7, 6), (10, 9)])
def test_char_lm_run_resumes_exactly_with_its_carried_state(tmp_path_factory, crash_at, ckpt_step):
    """(7, 6): a step checkpoint mid-epoch, the carried state goes on; (10, 9): the checkpoint after the
    first epoch's last batch (9 batches an epoch), the next epoch starts from a zero state."""
    _crash_and_resume(tmp_path_factory, _chars(tmp_path_factory.mktemp("text")), crash_at, ckpt_step)


@pytest.mark.parametrize("data", ["jsb", "chars"])
def test_training_epoch_metrics_cover_the_batches_before_the_resume(tmp_path_factory, data):
    """The run ends in the epoch it resumed in (8 steps, resumed from step 6): train/loss, a metric logged
    at the epoch's end, averages the whole epoch, the batches before the interruption included (the
    checkpoint holds the metric's state; Lightning does not restore epoch aggregates mid-epoch)."""
    base = JSB if data == "jsb" else _chars(tmp_path_factory.mktemp("text"))
    _crash_and_resume(tmp_path_factory, [o for o in base if not o.startswith("trainer.max_steps")]
                      + ["trainer.max_steps=8"])
