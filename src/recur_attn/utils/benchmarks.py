"""Writing benchmark tables into docs/benchmarks.md."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, heading: str, body: str) -> None:
    """Replace (or append) the section that starts with ``heading`` (e.g. "## Grid LSTM") in ``path``.

    The section runs to the next level-2 heading; the others are left as they are.
    """
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{heading}\n\n{body}\n"
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + block + (text[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
