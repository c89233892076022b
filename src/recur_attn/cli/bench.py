"""``recur-attn-bench``: time every cell of the zoo against torch's own fused RNNs.

For each cell name, a one-layer :class:`~recur_attn.layers.Recurrent` (two
layers for ``dglstm``, whose depth gate needs a layer below, against a
two-layer nn.LSTM) is timed against its torch reference -- nn.LSTM for the
LSTM family, ``dglstm`` and nothing else; nn.GRU for the GRU family; nn.RNN
(tanh, or relu for ``rnn_relu``) for the Elman cells and ``clockwork`` --
at the same sizes:

* forward+backward time of a training step (``out.backward(g)``, inputs
  without grad like a first layer), and no-grad forward time;
* peak memory of one training step at ``--mem-seq-len`` (default T=1000):
  on CUDA ``torch.cuda.max_memory_allocated``; on CPU the peak resident set
  of a fresh subprocess above its resident set just before the step.

All candidates are interleaved in one process (one round times each once,
``--repeats`` rounds), and the table reports medians and the ratio to the
torch reference. It prints the table and writes it into ``--out``
(``docs/benchmarks.md``) under ``## Cells`` / ``### <--title>``, replacing
only that subsection, together with the machine it ran on.

    recur-attn-bench                                  # defaults: T=100 B=64 I=128 H=256, CPU
    recur-attn-bench --impls reference --title "Before: reference path"
    python scripts/bench_cells.py --cells lstm,cifg --repeats 3 --no-memory
    recur-attn-bench --json rows.json --plot docs/figures/bench_cells.png   # also the rows and a bar chart
    python scripts/plot_bench.py rows.json docs/figures/bench_cells.png     # the chart from saved rows
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

from ..cells import CELLS, GRU_FAMILY, LSTM_FAMILY
from ..layers import Recurrent

DEFAULT_OUT = Path("docs/benchmarks.md")


def torch_reference(cell: str) -> tuple[str, str]:
    """(kind, nonlinearity) of the torch module a cell is compared with."""
    if cell in GRU_FAMILY:
        return "GRU", ""
    if cell in ("rnn_tanh", "rnn_relu", "clockwork"):
        return "RNN", "relu" if cell == "rnn_relu" else "tanh"
    if cell in LSTM_FAMILY:
        return "LSTM", ""
    raise ValueError(f"no torch reference for cell {cell!r}")


def layers_for(cell: str, layers: int) -> int:
    return max(layers, 2) if cell == "dglstm" else layers


def equal_work_hidden(cell: str, input_size: int, hidden_size: int) -> int | None:
    """Hidden size of an nn.LSTM that does as many multiply-adds per token as ``cell`` at these sizes, for
    the cells whose equations cost more than their reference's; None for the others.

    ``fgr`` adds 9 H x H gate-recurrence matrices to the LSTM's 4 H (I + H): an nn.LSTM of hidden h does
    4 h (I + h), so h solves 4 h^2 + 4 I h = 4 H (I + H) + 9 H^2. Comparing with that module tells how
    efficiently the extra arithmetic runs, which the same-size ratio cannot."""
    if cell != "fgr":
        return None
    I, H = input_size, hidden_size
    work = 4 * H * (I + H) + 9 * H * H
    return round((-I + math.sqrt(I * I + work)) / 2)


def build_torch(kind: str, nonlin: str, args, num_layers: int, hidden_size: int | None = None) -> nn.Module:
    H = hidden_size or args.hidden_size
    if kind == "RNN":
        m = nn.RNN(args.input_size, H, num_layers, nonlinearity=nonlin)
    else:
        m = getattr(nn, kind)(args.input_size, H, num_layers)
    return m


def ref_name(kind: str, nonlin: str, num_layers: int, hidden_size: int | None = None) -> str:
    base = f"nn.{kind}" + (f"({nonlin})" if kind == "RNN" else "")
    base += f" x{num_layers}" if num_layers > 1 else ""
    return base + (f" H={hidden_size} (equal multiply-adds)" if hidden_size else "")


def build_cell_module(cell: str, impl: str, args, num_layers: int) -> nn.Module:
    kwargs = {}
    if cell == "clockwork":
        kwargs["num_modules"] = args.clockwork_modules
    return Recurrent(cell, args.input_size, args.hidden_size, num_layers=num_layers, impl=impl, **kwargs)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast_ctx(device: torch.device, dtype: str):
    if dtype == "bf16-autocast":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def time_train(m: nn.Module, x, g, device, dtype) -> float:
    for p in m.parameters():
        p.grad = None
    sync(device)
    t0 = time.perf_counter()
    with autocast_ctx(device, dtype):
        out = m(x)[0]
    out.backward(g.to(out.dtype))
    sync(device)
    return time.perf_counter() - t0


def time_infer(m: nn.Module, x, device, dtype) -> float:
    sync(device)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast_ctx(device, dtype):
        m(x)
    sync(device)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status: peak-memory measurement needs Linux")


def measure_memory(spec: dict) -> float:
    """Peak bytes of one training step above what was held before it."""
    args = argparse.Namespace(**spec["args"])
    device = torch.device(args.device)
    torch.manual_seed(0)
    nl = spec["num_layers"]
    hidden = spec.get("hidden") or args.hidden_size
    if spec["impl"] == "torch-module":
        kind, nonlin = torch_reference(spec["cell"])
        m = build_torch(kind, nonlin, args, nl, hidden)
    else:
        m = build_cell_module(spec["cell"], spec["impl"], args, nl)
    m = m.to(device)
    T = args.mem_seq_len
    x = torch.randn(T, args.batch_size, args.input_size, device=device)
    g = torch.randn(T, args.batch_size, hidden, device=device)
    # warm up at a short length (allocator, kernels), then measure the long step
    time_train(m, x[:4], g[:4], device, args.dtype)
    for p in m.parameters():
        p.grad = None
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        time_train(m, x, g, device, args.dtype)
        return float(torch.cuda.max_memory_allocated(device) - base)
    # reset the kernel's high-water mark (Linux >= 4.0), so VmHWM is the peak of this step alone
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss_bytes()
    time_train(m, x, g, device, args.dtype)
    return float(max(_hwm_bytes() - base, 0))


def memory_in_subprocess(spec: dict) -> float:
    code = ("import json,sys; from recur_attn.cli.bench import measure_memory; "
            "print(json.dumps(measure_memory(json.loads(sys.argv[1]))))")
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["args"]["threads"] or torch.get_num_threads()))
    res = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe for {spec['cell']} ({spec['impl']}) failed:\n{res.stderr[-2000:]}")
    return float(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- table
def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        dev = torch.cuda.get_device_name(device)
    else:
        cpu = platform.processor() or "cpu"
        try:
            with open("/proc/cpuinfo") as f:
                names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
            cpu = names[0] if names else cpu
        except OSError:
            pass
        from ..layers.fast import native

        dev = (f"{cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}; "
               f"C++ kernels {native.state()}")
    try:
        load = "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = ""
    return (f"{dev}; torch {torch.__version__}; Python {platform.python_version()}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {load}")


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.1f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def fmt_mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


def render(rows: list[dict], args, machine: str, title: str) -> str:
    lines = [f"### {title}", "",
             f"Machine: {machine}.", "",
             f"Sizes: T={args.seq_len}, B={args.batch_size}, I={args.input_size}, H={args.hidden_size}, "
             f"layers={args.layers} (dglstm: {layers_for('dglstm', args.layers)}), device {args.device}, "
             f"{args.dtype}, clockwork modules={args.clockwork_modules}; medians of {args.repeats} interleaved "
             f"rounds; memory: peak of one training step at T={args.mem_seq_len}"
             + (" (CUDA max_memory_allocated)." if args.device.startswith("cuda")
                else " (peak RSS (VmHWM, reset before the step) of a fresh process above its RSS before the step)."),
             "",
             "| cell | impl | vs | fwd+bwd ms | ref ms | ratio | infer ms | ref ms | ratio | peak MB | ref MB | ratio |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['cell']} | {r['active_impl']} | {r['ref']} | {fmt_ms(r['train'])} | {fmt_ms(r['ref_train'])} | "
            f"{fmt_ratio(r['train'], r['ref_train'])} | {fmt_ms(r['infer'])} | {fmt_ms(r['ref_infer'])} | "
            f"{fmt_ratio(r['infer'], r['ref_infer'])} | {fmt_mb(r['mem'])} | {fmt_mb(r['ref_mem'])} | "
            f"{fmt_ratio(r['mem'], r['ref_mem'])} |")
    return "\n".join(lines) + "\n"


def write_section(path: Path, title: str, table: str) -> None:
    """Put ``table`` (starting with ``### title``) into the ``## Cells`` section of ``path``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    m = re.search(r"^## Cells[ \t]*\n", text, flags=re.M)
    if m is None:
        text = text.rstrip("\n") + "\n\n## Cells\n\n" + table
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    start = m.end()
    nxt = re.search(r"^## ", text[start:], flags=re.M)
    end = start + nxt.start() if nxt else len(text)
    section = text[start:end]
    sub = re.search(rf"^### {re.escape(title)}[ \t]*\n", section, flags=re.M)
    if sub is None:
        section = section.rstrip("\n") + "\n\n" + table + "\n"
    else:
        after = re.search(r"^### ", section[sub.end():], flags=re.M)
        sub_end = sub.end() + after.start() if after else len(section)
        section = section[:sub.start()] + table + "\n" + section[sub_end:]
    if not section.startswith("\n"):
        section = "\n" + section
    path.write_text(text[:start] + section.rstrip("\n") + "\n" + ("\n" + text[end:] if end < len(text) else ""))


def plot_rows(rows: list[dict], path: Path, title: str, target: float = 1.25, mem_target: float = 1.5) -> Path:
    """A bar chart of the table: for each cell (and each extra reference, such as fgr's equal-work
    nn.LSTM), its time over the torch reference's in training and in inference, and its peak memory over
    the reference's where measured, with the 1.0 line and the targets' lines (issue 3: time 1.25x,
    memory 1.5x). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def ratio(r, key):
        return r[key] / r["ref_" + key] if r.get(key) and r.get("ref_" + key) else float("nan")

    labels = [f"{r['cell']} vs {r['ref']}" if r.get("ref_hidden") else r["cell"] for r in rows]
    series = [("training", "train", "tab:blue"), ("inference", "infer", "tab:orange"), ("peak memory", "mem",
                                                                                          "tab:gray")]
    series = [s for s in series if any(r.get(s[1]) for r in rows)]
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.2))
    for i, (name, key, color) in enumerate(series):
        ys = [j + (i - (len(series) - 1) / 2) * height for j in range(len(rows))]
        vals = [ratio(r, key) for r in rows]
        ax.barh(ys, vals, height=height, color=color, label=name)
        for y, v in zip(ys, vals):
            if v == v:  # not NaN
                ax.text(v + 0.02, y, f"{v:.2f}", va="center", fontsize=6)
    ax.axvline(1.0, color="k", lw=0.8)
    ax.axvline(target, color="tab:red", ls="--", lw=1, label=f"time target {target}x")
    if any(s[1] == "mem" for s in series):
        ax.axvline(mem_target, color="tab:gray", ls=":", lw=1, label=f"memory target {mem_target}x")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time (memory) over the torch reference's")
    ax.set_title(textwrap.fill(title, 90), fontsize=9)  # long section titles on several lines
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- main
def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="recur-attn-bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="all", help="comma-separated cell names, or 'all'")
    ap.add_argument("--impls", default="auto", help="comma-separated Recurrent impls to time (auto, fused, reference)")
    ap.add_argument("--seq-len", "-T", type=int, default=100)
    ap.add_argument("--batch-size", "-B", type=int, default=64)
    ap.add_argument("--input-size", "-I", type=int, default=128)
    ap.add_argument("--hidden-size", "-H", type=int, default=256)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--clockwork-modules", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bf16-autocast"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--mem-seq-len", type=int, default=1000)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    ap.add_argument("--no-infer", action="store_true", help="skip the inference column")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write ('-' for none)")
    ap.add_argument("--title", default=None, help="subsection title under '## Cells'")
    ap.add_argument("--json", type=Path, default=None, help="also save the raw rows as JSON")
    ap.add_argument("--plot", type=Path, default=None, help="also draw the ratios as a bar chart (PNG)")
    args = ap.parse_args(argv)
    cells = list(CELLS) if args.cells == "all" else [c.strip() for c in args.cells.split(",") if c.strip()]
    for c in cells:
        if c not in CELLS:
            ap.error(f"unknown cell {c!r}; valid: {', '.join(sorted(CELLS))}")
    args.cell_list = cells
    args.impl_list = [s.strip() for s in args.impls.split(",") if s.strip()]
    return args


def run(argv=None) -> list[dict]:
    """Time, print and write the table; returns its rows."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    T, B = args.seq_len, args.batch_size
    x = torch.randn(T, B, args.input_size, device=device)
    grads: dict[int, torch.Tensor] = {}  # output gradient by hidden size

    def out_grad(hidden: int) -> torch.Tensor:
        if hidden not in grads:
            grads[hidden] = torch.randn(T, B, hidden, device=device)
        return grads[hidden]

    out_grad(args.hidden_size)

    # candidates: (cell, impl) -> module; references: (kind, nonlin, layers, hidden or None) -> module,
    # hidden set for the equal-multiply-add reference of a cell that costs more than its reference
    refs: dict[tuple, nn.Module] = {}
    cands: list[dict] = []
    for cell in args.cell_list:
        kind, nonlin = torch_reference(cell)
        nl = layers_for(cell, args.layers)
        keys = [(kind, nonlin, nl, None)]
        hw = equal_work_hidden(cell, args.input_size, args.hidden_size)
        if hw is not None:
            keys.append((kind, nonlin, nl, hw))
        for key in keys:
            if key not in refs:
                refs[key] = build_torch(kind, nonlin, args, nl, key[3]).to(device)
        for impl in args.impl_list:
            m = build_cell_module(cell, impl, args, nl).to(device)
            cands.append({"cell": cell, "impl": impl, "module": m, "ref_keys": keys, "layers": nl,
                          "active_impl": m.active_impl})

    jobs = [("ref", k, m) for k, m in refs.items()] + [("cand", i, c["module"]) for i, c in enumerate(cands)]
    times: dict[tuple, dict[str, list[float]]] = {(kind, k): {"train": [], "infer": []} for kind, k, _ in jobs}
    n_rounds = args.warmup + args.repeats
    print(f"timing {len(cands)} candidates and {len(refs)} torch references, {n_rounds} rounds ...", flush=True)
    for r in range(n_rounds):
        for kind, k, m in jobs:
            hidden = (k[3] if kind == "ref" else None) or args.hidden_size
            tt = time_train(m, x, out_grad(hidden), device, args.dtype)
            ti = None if args.no_infer else time_infer(m, x, device, args.dtype)
            if r >= args.warmup:
                times[(kind, k)]["train"].append(tt)
                if ti is not None:
                    times[(kind, k)]["infer"].append(ti)
        print(f"  round {r + 1}/{n_rounds} done", flush=True)

    def med(v):
        return statistics.median(v) if v else None

    mem_cache: dict[tuple, float | None] = {}

    def mem(cell, impl, nl, hidden=None):
        if args.no_memory:
            return None
        key = (cell, impl, nl) if impl != "torch-module" else (torch_reference(cell), nl, hidden)
        if key not in mem_cache:
            spec = {"cell": cell, "impl": impl, "num_layers": nl, "hidden": hidden, "args": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("cell_list", "impl_list")}}
            if device.type == "cuda":
                mem_cache[key] = measure_memory(spec)
            else:
                mem_cache[key] = memory_in_subprocess(spec)
            print(f"  memory {cell} {impl}{f' H={hidden}' if hidden else ''}: {mem_cache[key] / 2**20:.0f} MB",
                  flush=True)
        return mem_cache[key]

    rows = []
    for i, c in enumerate(cands):
        ct = times[("cand", i)]
        for key in c["ref_keys"]:
            kind, nonlin, nl, hidden = key
            rt = times[("ref", key)]
            rows.append({
                "cell": c["cell"], "impl": c["impl"], "active_impl": c["active_impl"],
                "ref": ref_name(kind, nonlin, nl, hidden), "ref_hidden": hidden,
                "train": med(ct["train"]), "ref_train": med(rt["train"]),
                "infer": med(ct["infer"]), "ref_infer": med(rt["infer"]),
                "mem": mem(c["cell"], c["impl"], nl), "ref_mem": mem(c["cell"], "torch-module", nl, hidden),
            })
    machine = machine_line(device)
    title = args.title or f"{args.device} {args.impls} T={T} B={B} I={args.input_size} H={args.hidden_size}"
    table = render(rows, args, machine, title)
    print(table)
    if str(args.out) != "-":
        write_section(args.out, title, table)
        print(f"written to {args.out} (## Cells / ### {title})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.plot:
        print(f"plot: {plot_rows(rows, args.plot, title)}")
    return rows


def main(argv=None) -> None:
    """The console script: returns None, so that its exit status is 0 (a console script exits with
    ``sys.exit(main())``, and a returned list would print it and exit with status 1)."""
    run(argv)


if __name__ == "__main__":
    main()
