"""Plot learning curves and final-metric-vs-T from recur-attn-train run folders.

    # train / val MSE against step, one line pair per run (a multirun folder or run folders)
    python scripts/plot_learning_curves.py curves logs/adding_lstm_vs_rnn/multiruns/<time> \
        -o docs/figures/adding_learning_curves.png
    # final test MSE against data.seq_len, one line per cell
    python scripts/plot_learning_curves.py vs-T logs/adding_lstm_vs_rnn/multiruns/<t1> <t2> \
        -o docs/figures/adding_mse_vs_T.png

Reads each run's CSV logger output (<run>/csv/**/metrics.csv), its metrics.json and
its composed config (<run>/.hydra/config.yaml); prints a table of the final metrics.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402


def find_runs(paths: list[Path]) -> list[Path]:
    runs = []
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such run folder")
        found = sorted({m.parent for m in p.rglob("metrics.json")})
        if not found:
            raise FileNotFoundError(f"{p}: no run folder with a metrics.json below it")
        runs += found
    return runs


def run_info(run: Path) -> dict:
    cfg_path = run / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path}: missing (not a recur-attn-train run folder?)")
    cfg = OmegaConf.load(cfg_path)
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "run": str(run),
        "cell": OmegaConf.select(cfg, "model.net.cell"),
        "seq_len": OmegaConf.select(cfg, "data.seq_len"),
        "hidden": OmegaConf.select(cfg, "model.net.hidden_size"),
        "steps": metrics.get("global_step"),
        "fit_s": metrics.get("time/fit_s"),
        "val_mse_best": metrics.get("val/loss_best"),
        "test_mse": metrics.get("test/mse"),
    }


def read_csv(run: Path) -> pd.DataFrame:
    files = sorted(run.glob("csv/**/metrics.csv"))
    if not files:
        raise FileNotFoundError(f"{run}: no csv/**/metrics.csv (run with logger=csv)")
    return pd.read_csv(files[-1])


def plot_curves(runs: list[Path], out: Path, metric: str = "mse", smooth: int = 8) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        info = run_info(run)
        df = read_csv(run)
        c = colors[i % len(colors)]
        label = f"{info['cell']} (T={info['seq_len']}, H={info['hidden']})"
        tr = df[["step", f"train/{metric}"]].dropna()
        if len(tr):
            ax.plot(tr["step"], tr[f"train/{metric}"].rolling(smooth, min_periods=1).mean(), color=c, alpha=0.45,
                    lw=1, label=f"{label} train (running mean of {smooth} logs)")
        va = df[["step", f"val/{metric}"]].dropna()
        if len(va):
            ax.plot(va["step"], va[f"val/{metric}"], "o-", color=c, lw=2, label=f"{label} val")
    ax.axhline(1 / 6, color="gray", ls="--", lw=1, label="mean predictor (1/6)")
    ax.set_yscale("log")
    ax.set_xlabel("training step (batches of 64)")
    ax.set_ylabel(f"{metric.upper()}")
    ax.set_title("Adding problem: LSTM vs tanh RNN")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


def plot_vs_T(runs: list[Path], out: Path) -> None:
    df = pd.DataFrame([run_info(r) for r in runs]).sort_values(["cell", "seq_len"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for cell, g in df.groupby("cell"):
        ax.plot(g["seq_len"], g["test_mse"], "o-", lw=2, label=cell)
    ax.axhline(1 / 6, color="gray", ls="--", lw=1, label="mean predictor (1/6)")
    ax.axhline(0.01, color="gray", ls=":", lw=1, label="MSE 0.01")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sorted(df["seq_len"].unique()))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("test MSE (best-val checkpoint)")
    steps = sorted(set(df["steps"].dropna().astype(int)))
    ax.set_title(f"Adding problem: test MSE vs T ({', '.join(map(str, steps))} steps)")
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["curves", "vs-T"])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders or multirun folders")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--metric", default="mse")
    args = ap.parse_args(argv)
    runs = find_runs(args.runs)
    table = pd.DataFrame([run_info(r) for r in runs]).drop(columns=["run"])
    print(table.sort_values(["cell", "seq_len"]).to_string(index=False))
    if args.kind == "curves":
        plot_curves(runs, args.out, args.metric)
    else:
        plot_vs_T(runs, args.out)


if __name__ == "__main__":
    main()
