"""Validation curves of recur-attn-train runs side by side: one metric against training
step and against minutes of fit (the run's fit time spread evenly over its steps), with
each run's final test metric in the legend.

    python scripts/plot_runs.py logs/grid_addition/long/seq_classifier logs/grid_addition/long/grid_2d_tied \
        --labels "stacked LSTM" "tied 2-D Grid LSTM" --metric acc --title "15-digit addition" \
        --out docs/figures/grid_addition_curves.png

Reads <run>/csv/**/metrics.csv (the CSV logger) and <run>/metrics.json; prints a table of
steps, fit time, best validation and test value per run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def load(run: Path, metric: str) -> tuple[pd.DataFrame, dict]:
    files = sorted(run.glob("csv/**/metrics.csv"))
    if not files:
        raise FileNotFoundError(f"{run}: no csv/**/metrics.csv (run with the csv logger)")
    mpath = run / "metrics.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"{mpath}: missing (the run has not finished its test phase?)")
    df = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    col = f"val/{metric}"
    if col not in df.columns:
        raise KeyError(f"{run}: no column {col!r} in its metrics.csv; columns: {', '.join(df.columns)}")
    return df[["step", col]].dropna().sort_values("step"), json.loads(mpath.read_text())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--labels", nargs="+", default=None)
    ap.add_argument("--metric", default="acc", help="logged as val/<metric> and test/<metric>")
    ap.add_argument("--title", default="")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        ap.error(f"{len(args.runs)} runs but {len(labels)} labels")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    rows = []
    for run, label in zip(args.runs, labels):
        df, m = load(run, args.metric)
        steps, fit_s = m.get("global_step"), m.get("time/fit_s")
        test = m.get(f"test/{args.metric}")
        name = f"{label} (test {test:.3f})" if test is not None else label
        ax1.plot(df["step"], df[f"val/{args.metric}"], "o-", ms=3, label=name)
        if steps and fit_s:
            ax2.plot(df["step"] * fit_s / steps / 60, df[f"val/{args.metric}"], "o-", ms=3, label=name)
        rows.append({"run": label, "steps": steps, "fit_min": None if fit_s is None else round(fit_s / 60, 1),
                     f"best val/{args.metric}": df[f"val/{args.metric}"].max(), f"test/{args.metric}": test})
    ax1.set_xlabel("training step")
    ax2.set_xlabel("minutes of fit (fit time spread evenly over the steps)")
    ax1.set_ylabel(f"validation {args.metric}")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=130)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
