"""recur-attn-inspect on checkpoints that the test trains for a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from recur_attn.cli.inspect import main as inspect_main
from recur_attn.cli.train import train


ROOT = Path(__file__).resolve().parents[2]
FAST = ["data=adding", "model=seq_regressor", "data.seq_len=12", "data.n_train=64", "data.n_val=32",
        "data.n_test=32", "data.batch_size=16", "model.net.hidden_size=8", "trainer.max_steps=4",
        "trainer.val_check_interval=2", "trainer.log_every_n_steps=1", "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false", "callbacks.rich_progress_bar=null", "callbacks.model_summary=null",
        "extras.print_config=false", "num_threads=1", "test=false", "forget_bias=1.0"]


def _train_run(run: Path, cell: str) -> Path:
    """Train a tiny model into ``run`` and save its config where recur-attn-train's Hydra does."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose(config_name="train", overrides=[*FAST, f"model/cell={cell}"])
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.log_dir = str(run / "logs")
        cfg.paths.output_dir = str(run)
        cfg.paths.work_dir = str(run)
    train(cfg)
    (run / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as Hydra saves it: unresolved
    return run


def _check_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01, f"{path} is blank"


def test_inspect_writes_figures_and_index(tmp_path):
    run = _train_run(tmp_path / "run", "lstm")
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    last = run / "checkpoints" / "last.ckpt"
    other = [c for c in ckpts if c.name != "last.ckpt"][0]  # the best so far, from an earlier step
    out = tmp_path / "inspect"
    inspect_main(["--ckpt", str(other), "--ckpt", str(last), "--out", str(out), "--examples", "1",
                  "--units", "6", "--walkthroughs", "1", "--label", "early", "--label", "last"])
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["checkpoints"]) == ["0_lstm", "1_lstm"]
    index = (out / "index.html").read_text()
    _check_png(out / "gradient_flow.png")
    assert "gradient_flow.png" in index
    for name in ("0_lstm", "1_lstm"):
        entry = summary["checkpoints"][name]
        assert entry["cell"] == "lstm" and entry["state"] == "c"
        assert len(entry["units"]) == 4 and len(entry["marker_jump_ratio"]) == 4
        expected = [f"{name}/units.png", f"{name}/gates_ex0_l0.png",
                    f"{name}/walkthrough_unit{entry['walkthrough_units'][0]}.png"]
        assert entry["walkthrough_units"][0] in entry["units"]
        assert entry["files"] == expected
        for f in expected:
            _check_png(out / f)
            assert f in index
        h_first, h_last = entry["grad_norm_h_first_last"]
        assert 0 < h_first and 0 < h_last


def test_inspect_rejects_a_checkpoint_outside_a_run(tmp_path):
    ck = tmp_path / "loose.ckpt"
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"\.hydra/config\.yaml"):
        inspect_main(["--ckpt", str(ck), "--out", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        inspect_main(["--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "o")])


def test_inspect_char_model_writes_coloured_text(tmp_path):
    """A character LM (data=chars model=charlm): units.html colours the text by the units found."""
    text = tmp_path / "t.txt"
    text.write_text("".join(f'say("a{i}", [b, (c)])\n' for i in range(60)))
    run = tmp_path / "run"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose(config_name="train", overrides=[
                "data=chars", "model=charlm", f"data.files=[{text}]", "data.split=[0.5,0.1,0.4]",
                "data.seq_len=40", "data.batch_size=4",
                "model.net.hidden_size=8", "model.net.embedding_size=4", "model.net.num_layers=1",
                "trainer.max_steps=2", "trainer.val_check_interval=2", "++trainer.enable_progress_bar=false",
                "++trainer.enable_model_summary=false", "callbacks.rich_progress_bar=null",
                "callbacks.model_summary=null", "extras.print_config=false", "test=false", "num_threads=1"])
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
        cfg.paths.log_dir = str(run / "logs")
        cfg.paths.root_dir = cfg.paths.work_dir = str(ROOT)
    train(cfg)
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    out = tmp_path / "inspect"
    inspect_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(out)])
    entry = json.loads((out / "summary.json").read_text())["checkpoints"]["0_lstm"]
    assert set(entry["char_units"]) == {"inside_quotes", "line_position", "bracket_depth"}
    page = (out / "0_lstm" / "units.html").read_text()
    spans = page.count("<span")
    assert page.count("<h2>") == 3 and spans % 3 == 0 and spans >= 3 * 60  # the same text, thrice
    assert "<span style='background:rgb(" in page
    pngs = [f for f in entry["files"] if f.endswith(".png")]
    assert sorted(pngs) == [f"0_lstm/chars_{k}.png" for k in ("bracket_depth", "inside_quotes", "line_position")]
    for f in pngs + ["gradient_flow.png"]:
        _check_png(out / f)
