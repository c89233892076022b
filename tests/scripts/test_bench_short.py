"""scripts/bench_short.py: every implementation of a cell is timed, the row says what ``auto`` runs
(``Recurrent.impl_for``, so a single step of an LSTM-family cell on CPU is the cell's own step), and the
table lands in its own subsection of ``## Cells`` without touching the others."""

from __future__ import annotations

import pytest
import torch

from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_short")


def test_rows_name_what_auto_runs(bench):
    args = bench.argparse.Namespace(input_size=3, hidden_size=8, steps=4, repeats=1)
    one = bench.measure("vanilla", 2, 1, args)
    seq = bench.measure("vanilla", 2, 3, args)
    torch_cell = bench.measure("gru", 2, 1, args)
    assert one["auto_runs"] == "reference" and seq["auto_runs"] == "fused" and torch_cell["auto_runs"] == "torch"
    assert set(one["ms"]) == {"auto", "fused", "reference"} and set(torch_cell["ms"]) == {"auto", "fused",
                                                                                            "reference", "torch"}
    assert all(v > 0 for r in (one, seq, torch_cell) for v in r["ms"].values())
    assert one["best"] == min(one["ms"]["fused"], one["ms"]["reference"])


def test_main_writes_its_section_of_cells(bench, tmp_path, capsys):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n## Cells\n\n### Other table\n\nkept\n\n## Later\n\nalso kept\n")
    threads = torch.get_num_threads()  # main sets them
    bench.main(["--cells", "cifg,rnn_relu", "--batch-sizes", "1", "--lengths", "1,2", "--hidden-size", "8",
                "--input-size", "3", "--steps", "2", "--repeats", "1", "--threads", "1", "--out", str(out),
                "--title", "Short test"])
    torch.set_num_threads(threads)
    text = out.read_text()
    assert "### Other table\n\nkept" in text and "## Later\n\nalso kept" in text
    assert text.count("### Short test") == 1
    rows = [line for line in text.splitlines() if line.startswith("| cifg") or line.startswith("| rnn_relu")]
    assert len(rows) == 4  # 2 cells x 1 batch size x 2 lengths
    assert "| cifg | 1 | 1 | reference |" in text and "| rnn_relu | 1 | 1 | torch |" in text
    assert "| auto runs |" in capsys.readouterr().out
