"""Checkpoint files: a crash while writing leaves the previous one loadable; a checkpoint
that carries pickled objects is refused before any of its code runs."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

import recur_attn.utils.checkpoint as ck
from recur_attn.utils.checkpoint import (
    AtomicCheckpointIO,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    atomic_save,
    load_checkpoint,
)


class Evil:
    """Unpickling this calls pathlib.Path.touch(marker): stands for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_crash_during_write_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)

    def dying_save(obj, f):
        f.write(b"PK\x03\x04 half a zip")  # some bytes reach the disk, then the process dies
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ck.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "global_step": 2}, path)
    monkeypatch.undo()
    got = load_checkpoint(path)
    assert got["global_step"] == 1 and torch.equal(got["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the temp file was removed


def test_plugin_round_trip_and_overwrite(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "a.ckpt"
    for step in (1, 2):
        io.save_checkpoint({"state_dict": {"w": torch.full((2,), float(step))}, "global_step": step}, path)
    got = io.load_checkpoint(path)
    assert got["global_step"] == 2 and torch.equal(got["state_dict"]["w"], torch.full((2,), 2.0))
    with pytest.raises(UnsafeCheckpointError, match="weights_only=False was asked"):
        io.load_checkpoint(path, weights_only=False)


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1)}, "payload": Evil(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.ckpt carries pickled Python objects.*(pathlib|touch)"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        AtomicCheckpointIO().load_checkpoint(path)
    assert not marker.exists()
    # (torch.load(weights_only=False) would have run it: the payload is real)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_malicious_checkpoint_given_to_train_fails_before_training(tmp_path):
    from tests.reliability._util import FAST, run_train

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Evil(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="evil.ckpt"):
        run_train(tmp_path / "run", FAST + ["trainer.max_steps=2", f"ckpt_path={path}"])
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_corrupt_and_missing_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    good = tmp_path / "good.ckpt"
    atomic_save({"state_dict": {"w": torch.randn(50)}}, good)
    data = good.read_bytes()
    bad = tmp_path / "half.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match="half.ckpt is truncated or corrupt"):
        load_checkpoint(bad)
    lst = tmp_path / "list.ckpt"
    torch.save([1, 2], lst)
    with pytest.raises(CorruptCheckpointError, match="not a mapping"):
        load_checkpoint(lst)


_WRITER = """
import sys, torch
sys.path.insert(0, {src!r})
from recur_attn.utils.checkpoint import atomic_save
w = torch.randn(4_000_000)
i = 0
while True:
    atomic_save({{"state_dict": {{"w": w + i}}, "i": i}}, {path!r})
    print(i, flush=True)
    i += 1
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_write(tmp_path):
    """A process writing 16 MB checkpoints in a loop is SIGKILLed at a random moment,
    several times: the file is always a whole checkpoint."""
    from tests.reliability._util import ROOT

    path = tmp_path / "last.ckpt"
    code = _WRITER.format(src=str(ROOT / "src"), path=str(path))
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip().isdigit()  # one whole checkpoint written
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        got = load_checkpoint(path)
        i = got["i"]
        assert torch.equal(got["state_dict"]["w"] - i, got["state_dict"]["w"] - i)
        assert got["state_dict"]["w"].shape == (4_000_000,)
