"""Figures of the parity experiment (``experiment=grid_parity``) from its run folders.

``--curves RUN_DIR ...``: validation accuracy against training step, one line per
run (label: model and k), from each run's csv log.

``--sweep DIR``: every run under DIR (a Hydra multirun folder, e.g. of
``-m experiment=grid_parity data.k_bits=8,16,24,32 model.net.depth=2,4,6
model=grid_1d,grid_ff_tanh,grid_ff_relu``): the largest k with test/acc >= 0.99
for each model and depth, plotted as k against depth, and printed as a table.

    .venv/bin/python scripts/plot_grid_parity.py --curves logs/grid_parity/runs/* --out docs/figures/grid_parity_curves.png
    .venv/bin/python scripts/plot_grid_parity.py --sweep logs/grid_parity/multiruns/<time> --out docs/figures/grid_parity_k_vs_depth.png
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

SOLVED = 0.99


def run_info(run: Path) -> dict:
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    net = cfg.model.net
    name = net._target_.rsplit(".", 1)[-1]
    if name == "FeedForwardNet":
        name = f"feed-forward {net.activation}"
    elif name == "GridLSTM1D":
        name = "1-D Grid LSTM" + (" (tied)" if net.tied else "")
    metrics = {}
    if (run / "metrics.json").exists():
        metrics = json.loads((run / "metrics.json").read_text())
    return {"model": name, "k": int(cfg.data.k_bits), "depth": int(net.depth), "metrics": metrics,
            "train_counts": cfg.data.get("train_counts", "binomial")}


def val_curve(run: Path) -> tuple[list[int], list[float]]:
    steps, accs = [], []
    for f in sorted(run.glob("csv/version_*/metrics.csv")):
        with open(f) as fh:
            for row in csv.DictReader(fh):
                if row.get("val/acc"):
                    steps.append(int(row["step"]))
                    accs.append(float(row["val/acc"]))
    return steps, accs


def plot_curves(runs: list[Path], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for run in runs:
        info = run_info(run)
        steps, accs = val_curve(run)
        if steps:
            test = info["metrics"].get("test/acc")
            label = f"{info['model']}, k={info['k']}, depth {info['depth']}"
            if test is not None:
                label += f" (test {test:.3f})"
            ax.plot(steps, accs, label=label)
    ax.axhline(SOLVED, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training step (batch 128)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0.4, 1.01)
    ax.set_title("k-bit parity, fixed budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def plot_sweep(root: Path, out: Path) -> None:
    best: dict[str, dict[int, int]] = defaultdict(dict)
    for cfg in root.rglob(".hydra/config.yaml"):
        run = cfg.parent.parent
        info = run_info(run)
        acc = info["metrics"].get("test/acc")
        best[info["model"]].setdefault(info["depth"], 0)
        if acc is not None and acc >= SOLVED:
            best[info["model"]][info["depth"]] = max(best[info["model"]][info["depth"]], info["k"])
    if not best:
        raise SystemExit(f"no runs under {root}")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    print("| model | depth | largest k solved |\n|---|---:|---:|")
    for model, by_depth in sorted(best.items()):
        depths = sorted(by_depth)
        ax.plot(depths, [by_depth[d] for d in depths], marker="o", label=model)
        for d in depths:
            print(f"| {model} | {d} | {by_depth[d] or '-'} |")
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel(f"largest k with test accuracy >= {SOLVED}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--curves", type=Path, nargs="+")
    g.add_argument("--sweep", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    if a.curves:
        plot_curves(a.curves, a.out)
    else:
        plot_sweep(a.sweep, a.out)


if __name__ == "__main__":
    main()
