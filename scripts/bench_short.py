"""Single steps and short sequences, no grad: what ``impl="auto"`` runs and what each implementation costs.

Sampling a token at a time calls a ``Recurrent`` with T == 1 and the state carried over; the whole-sequence
kernels spend O(weights) per call before their first step, so at small T the cell's own step (the reference
path) or torch's kernel can be the faster. For each cell, batch size and length this times every
implementation the cell has (interleaved rounds, medians of calls carrying the state), says which one
``auto`` runs (``Recurrent.impl_for``) and how far that is from the fastest, prints the table and writes it
into ``docs/benchmarks.md`` (``## Cells``, ``### Single steps and short sequences ...``).

    .venv/bin/python scripts/bench_short.py                       # defaults: H=256, B=1,64, T=1,2,4,16
    .venv/bin/python scripts/bench_short.py --hidden-size 512 --lengths 1,8 --out -
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from recur_attn.cli.bench import DEFAULT_OUT, machine_line, write_section
from recur_attn.layers import Recurrent
from recur_attn.layers.recurrent import TORCH_FUSED

CELLS = "lstm,vanilla,fgr,gru_cho,rnn_tanh,clockwork"


def impls_of(cell: str) -> list[str]:
    return ["fused", "reference"] + (["torch"] if cell in TORCH_FUSED else [])


def time_calls(m: Recurrent, x: torch.Tensor, calls: int) -> float:
    """Seconds per call, ``calls`` calls each carrying the previous call's state (as a sampling loop does)."""
    state = None
    t0 = time.perf_counter()
    for _ in range(calls):
        _, state = m(x, state)
    return (time.perf_counter() - t0) / calls


def measure(cell: str, B: int, T: int, args) -> dict:
    kw = {"num_modules": 4} if cell == "clockwork" else {}
    layers = 2 if cell == "dglstm" else 1
    mods = {"auto": Recurrent(cell, args.input_size, args.hidden_size, num_layers=layers, **kw).eval()}
    for impl in impls_of(cell):
        mods[impl] = Recurrent(cell, args.input_size, args.hidden_size, num_layers=layers, impl=impl, **kw).eval()
        mods[impl].load_state_dict(mods["auto"].state_dict())
    x = torch.randn(T, B, args.input_size)
    calls = max(3, args.steps // T)
    times: dict[str, list[float]] = {k: [] for k in mods}
    with torch.no_grad():
        for m in mods.values():
            time_calls(m, x, 2)  # warm-up (kernel build, first allocations)
        for r in range(args.repeats):
            order = list(mods) if r % 2 == 0 else list(reversed(mods))
            for k in order:
                times[k].append(time_calls(mods[k], x, calls))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    best = min(med[k] for k in impls_of(cell))
    return {"cell": cell, "B": B, "T": T, "auto_runs": mods["auto"].impl_for(T, B), "ms": med, "best": best}


def render(rows: list[dict], args, title: str) -> str:
    lines = [f"### {title}", "",
             f"Machine: {machine_line(torch.device('cpu'))}", "",
             f"No grad, I={args.input_size}, H={args.hidden_size}, one layer, float32, CPU; ms per call, each call "
             f"carrying the previous call's state, medians of {args.repeats} interleaved rounds of about "
             f"{args.steps} steps. `auto/best`: auto's time over the fastest implementation's.", "",
             "| cell | B | T | auto runs | auto ms | fused ms | reference ms | torch ms | auto/best |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        ms = r["ms"]
        torch_ms = f"{ms['torch']:.3f}" if "torch" in ms else "-"
        lines.append(f"| {r['cell']} | {r['B']} | {r['T']} | {r['auto_runs']} | {ms['auto']:.3f} | {ms['fused']:.3f} | "
                     f"{ms['reference']:.3f} | {torch_ms} | {ms['auto'] / r['best']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default=CELLS)
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--lengths", default="1,2,4,16")
    ap.add_argument("--input-size", "-I", type=int, default=128)
    ap.add_argument("--hidden-size", "-H", type=int, default=256)
    ap.add_argument("--steps", type=int, default=64, help="steps timed per round (calls = steps / T)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write ('-' for none)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    Bs = [int(b) for b in args.batch_sizes.split(",")]
    Ts = [int(t) for t in args.lengths.split(",")]
    jobs = [(c, B, T) for c in cells for B in Bs for T in Ts]
    rows = [measure(c, B, T, args) for c, B, T in tqdm(jobs, desc="cells x B x T", file=sys.stdout)]
    title = args.title or f"Single steps and short sequences (inference, H={args.hidden_size})"
    table = render(rows, args, title)
    print(table)
    if str(args.out) != "-":
        write_section(args.out, title, table)
        print(f"written to {args.out} (## Cells / ### {title})")


if __name__ == "__main__":
    main()
