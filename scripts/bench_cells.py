"""Benchmark every cell of the zoo against torch's fused RNNs (same as ``recur-attn-bench``).

    .venv/bin/python scripts/bench_cells.py --help
"""

from recur_attn.cli.bench import main

if __name__ == "__main__":
    main()
