"""recur-attn-bench (scripts/bench_cells.py) on tiny sizes: rows, references, the markdown section."""

import pytest

from recur_attn.cli import bench
from recur_attn.layers.fast import native


@pytest.mark.parametrize("I,H", [(128, 256), (10, 7), (64, 64)])
def test_equal_work_hidden_matches_fgr_multiply_adds(I, H):
    h = bench.equal_work_hidden("fgr", I, H)
    fgr = 4 * H * (I + H) + 9 * H * H  # the LSTM's input and recurrent GEMMs, plus 9 H x H gate matrices
    lstm = lambda n: 4 * n * (I + n)  # noqa: E731
    assert h > H
    assert lstm(h - 1) < fgr < lstm(h + 1)  # the nearest integer hidden size
    assert bench.equal_work_hidden("vanilla", I, H) is None  # same arithmetic as nn.LSTM: no extra row


def test_bench_rows_and_section(tmp_path):
    out = tmp_path / "benchmarks.md"
    rows = bench.run(["--cells", "fgr,gru_cho", "-T", "3", "-B", "2", "-I", "4", "-H", "6", "--repeats", "1",
                       "--warmup", "0", "--no-memory", "--out", str(out), "--title", "tiny"])
    refs = [(r["cell"], r["ref"]) for r in rows]
    hw = bench.equal_work_hidden("fgr", 4, 6)
    assert refs == [("fgr", "nn.LSTM"), ("fgr", f"nn.LSTM H={hw} (equal multiply-adds)"), ("gru_cho", "nn.GRU")]
    fgr_rows = [r for r in rows if r["cell"] == "fgr"]
    assert fgr_rows[0]["train"] == fgr_rows[1]["train"]  # one candidate, two references
    assert fgr_rows[0]["ref_train"] != fgr_rows[1]["ref_train"]
    assert all(r["train"] > 0 and r["infer"] > 0 and r["mem"] is None for r in rows)
    text = out.read_text()
    assert "## Cells" in text and "### tiny" in text
    assert f"| fgr | fused | nn.LSTM H={hw} (equal multiply-adds) |" in text
    # a second run with the same title replaces its subsection instead of appending one
    png = tmp_path / "bench.png"
    bench.run(["--cells", "lstm", "-T", "2", "-B", "2", "-I", "4", "-H", "6", "--repeats", "1", "--warmup", "0",
                "--no-memory", "--no-infer", "--out", str(out), "--title", "tiny", "--plot", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = out.read_text()
    assert text.count("### tiny") == 1 and "| fgr |" not in text
    assert f"| lstm | {'fused' if native.state() == 'on' else 'torch'} | nn.LSTM |" in text  # auto's choice on CPU


def test_console_script_exits_zero(tmp_path):
    """The installed ``recur-attn-bench`` runs ``sys.exit(main())``: main must return None (a returned
    list of rows would be printed to stderr with exit status 1 after a successful run)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "import sys; from recur_attn.cli.bench import main; sys.exit(main())",
           "--cells", "gru_cho", "-T", "2", "-B", "2", "-I", "3", "-H", "4", "--repeats", "1", "--warmup", "0",
           "--no-memory", "--no-infer", "--out", "-"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "| gru_cho | fused | nn.GRU |" in res.stdout
    assert "'cell'" not in res.stderr


def test_plot_rows_draws_every_row_and_the_targets(tmp_path, monkeypatch):
    """One bar group per row (fgr's equal-work reference gets its own), a bar per measured column."""
    import matplotlib.pyplot as plt

    rows = [{"cell": "fgr", "ref": "nn.LSTM", "ref_hidden": None, "train": 2.0, "ref_train": 1.0, "infer": 3.0,
             "ref_infer": 1.0, "mem": 1.0, "ref_mem": 2.0},
            {"cell": "fgr", "ref": "nn.LSTM H=9 (equal multiply-adds)", "ref_hidden": 9, "train": 2.0,
             "ref_train": 4.0, "infer": 3.0, "ref_infer": 3.0, "mem": None, "ref_mem": None}]
    saved = {}
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: saved.setdefault("fig", fig) and real_close(fig))
    path = bench.plot_rows(rows, tmp_path / "sub" / "b.png", "t")
    assert path.exists()
    ax = saved["fig"].axes[0]
    widths = [p.get_width() for p in ax.patches]
    assert len(widths) == 6 and sum(w != w for w in widths) == 1  # 2 rows x 3 columns, one memory not measured
    assert sorted(round(w, 3) for w in widths if w == w) == [0.5, 0.5, 1.0, 2.0, 3.0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["fgr", "fgr vs nn.LSTM H=9 (equal multiply-adds)"]
    assert {round(line.get_xdata()[0], 2) for line in ax.lines} == {1.0, 1.25, 1.5}
