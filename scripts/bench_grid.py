"""Benchmark: a 2-D Grid LSTM (time x depth) against a stacked nn.LSTM of the same
hidden size and depth.

For each (hidden size, layers) it times one forward and one forward + backward
pass over a batch of sequences, for ``recur_attn.models.GridLSTM2D`` (untied and
tied) and ``torch.nn.LSTM`` (cuDNN-style fused kernel on CPU). A 2-D Grid LSTM
block holds two LSTM transforms (time and depth), each reading both hidden
vectors, so a layer step does twice the multiply-adds of a stacked-LSTM layer step
(2 x 4H x 2H weights against 4H x 2H), and it runs block by block in Python. Prints a table and writes it
into the "Grid LSTM" section of docs/benchmarks.md (replacing an older one).

    .venv/bin/python scripts/bench_grid.py                       # defaults below
    .venv/bin/python scripts/bench_grid.py --hidden 64 128 --layers 2 --steps 50 --batch 32
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from recur_attn.models.grid import GridLSTM2D, count_parameters
from recur_attn.utils.benchmarks import replace_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Grid LSTM"


def timeit(fn, repeats: int) -> tuple[float, list[float]]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def bench_one(hidden: int, layers: int, batch: int, steps: int, inputs: int, repeats: int) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(batch, steps, inputs)
    nets = {
        "nn.LSTM (stacked)": nn.LSTM(inputs, hidden, layers, batch_first=True),
        "GridLSTM2D (untied)": GridLSTM2D(inputs, hidden, layers, tied=False),
        "GridLSTM2D (tied)": GridLSTM2D(inputs, hidden, layers, tied=True),
    }
    rows = []
    for name, net in nets.items():
        def fwd():
            with torch.no_grad():
                net(x)

        def fwd_bwd():
            out, _ = net(x)
            out.sum().backward()
            net.zero_grad(set_to_none=True)

        f, _ = timeit(fwd, repeats)
        fb, _ = timeit(fwd_bwd, repeats)
        rows.append({"hidden": hidden, "layers": layers, "model": name, "params": count_parameters(net),
                     "fwd_ms": f * 1e3, "fwd_bwd_ms": fb * 1e3})
    base = rows[0]
    for r in rows:
        r["slowdown"] = r["fwd_bwd_ms"] / base["fwd_bwd_ms"]
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| hidden | layers | model | parameters | forward ms | forward+backward ms | forward+backward vs nn.LSTM |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['hidden']} | {r['layers']} | {r['model']} | {r['params']:,} | {r['fwd_ms']:.1f} | "
                     f"{r['fwd_bwd_ms']:.1f} | {r['slowdown']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[64, 128])
    p.add_argument("--layers", type=int, nargs="+", default=[2])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--inputs", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for h in a.hidden:
        for n in a.layers:
            rows.extend(bench_one(h, n, a.batch, a.steps, a.inputs, a.repeats))
    tab = table(rows)
    print(tab)
    load = ""
    try:
        import os

        load = f", load average {os.getloadavg()[0]:.1f} at the end (shared machine: times are noisy)"
    except OSError:
        pass
    body = "\n".join([
        f"A 2-D Grid LSTM over time x depth (`recur_attn.models.GridLSTM2D`, depth priority) against "
        f"`torch.nn.LSTM` with the same hidden size and number of layers: one forward, and one forward + "
        f"backward of `out.sum()`, on a batch of {a.batch} sequences of {a.steps} steps with {a.inputs} "
        f"inputs. CPU, torch {torch.__version__}, {a.threads} thread(s), {platform.machine()}{load}; "
        f"median of {a.repeats} after a warm-up.",
        "",
        tab,
        "",
        "A Grid block computes two LSTM transforms (time and depth) that each read both hidden vectors "
        "(2 x 4H x 2H weights per layer against 4H x 2H for an LSTM layer with input size H), and runs "
        "block by block in Python, where nn.LSTM runs a fused C++ loop. Tying along depth shares the "
        "weights (fewer parameters) but does the same arithmetic.",
        "",
        f"Command: `python scripts/bench_grid.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip(),
    ])
    if not a.no_write:
        replace_section(a.out, SECTION, body)
        print(f"wrote the {SECTION!r} section of {a.out}")
    return rows


if __name__ == "__main__":
    main()
