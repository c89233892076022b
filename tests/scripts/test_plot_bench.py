"""scripts/plot_bench.py: the chart from saved benchmark rows, and a clear error for a file that is not."""

from __future__ import annotations

import json

import pytest

from conftest import load_script


def test_plots_saved_rows_and_rejects_other_files(tmp_path):
    mod = load_script("plot_bench")
    rows = [{"cell": "cifg", "ref": "nn.LSTM", "ref_hidden": None, "train": 1.0, "ref_train": 2.0, "infer": 1.0,
             "ref_infer": 1.0, "mem": None, "ref_mem": None}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    out = mod.main([str(tmp_path / "rows.json"), str(tmp_path / "b.png")])
    assert out.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.json").write_text('{"cell": ')
    with pytest.raises(SystemExit, match="cannot read the benchmark rows in .*bad.json"):
        mod.main([str(tmp_path / "bad.json"), str(tmp_path / "c.png")])
    (tmp_path / "dict.json").write_text('{"cell": "x"}')
    with pytest.raises(SystemExit, match="not a list of recur-attn-bench rows"):
        mod.main([str(tmp_path / "dict.json"), str(tmp_path / "c.png")])
