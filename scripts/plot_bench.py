"""Draw the cell benchmark's ratios (``recur-attn-bench --json rows.json``) as a bar chart.

    .venv/bin/python scripts/plot_bench.py rows.json docs/figures/bench_cells.png [--title TEXT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recur_attn.cli.bench import plot_rows


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", type=Path, help="the JSON rows recur-attn-bench --json wrote")
    ap.add_argument("out", type=Path, help="the PNG to write")
    ap.add_argument("--title", default="recur-attn-bench: each cell against its torch reference")
    args = ap.parse_args(argv)
    try:
        rows = json.loads(args.rows.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"plot_bench: cannot read the benchmark rows in {args.rows}: {e}") from e
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "cell" in r for r in rows):
        raise SystemExit(f"plot_bench: {args.rows} is not a list of recur-attn-bench rows")
    path = plot_rows(rows, args.out, args.title)
    print(f"written {path}")
    return path


if __name__ == "__main__":
    main()
