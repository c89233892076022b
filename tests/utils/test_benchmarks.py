from recur_attn.utils.benchmarks import replace_section


def test_replace_section_keeps_the_others(tmp_path):
    p = tmp_path / "benchmarks.md"
    replace_section(p, "## Grid LSTM", "old grid")
    replace_section(p, "## Cells", "cells table")
    replace_section(p, "## Grid LSTM", "new grid")
    text = p.read_text()
    assert text.startswith("# Benchmarks\n")
    assert "new grid" in text and "old grid" not in text and "cells table" in text
    assert text.index("## Grid LSTM") < text.index("## Cells")  # replaced in place, not appended
