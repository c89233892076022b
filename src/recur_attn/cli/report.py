"""``recur-attn-report PATH_TO_MULTIRUN``: compare the runs of a Hydra multirun.

    recur-attn-report logs/greff_jsb/multiruns/2026-11-28_06-00-00
    recur-attn-report logs/x/multiruns/<time> --metric test/bpc --group-by model/cell --baseline lstm

Every run folder under PATH (a folder with ``.hydra/overrides.yaml``) is read:
its overrides (``.hydra/overrides.yaml``), its final metrics (``metrics.json``,
written by ``recur-attn-train``) and its CSV log (``csv/version_*/metrics.csv``)
for the learning curves. Runs are grouped by the swept key(s): by default the
override keys that vary across runs and repeat (``model/cell`` in a study of
variants; keys with a new value in every run, like a random search's learning
rate, are the search, not the grouping; ``seed`` and ``greff_trial`` index
repetitions and never group, nor do keys named with ``--replicate-key``), or the keys
given with ``--group-by``.

Written to ``--out`` (default ``PATH/report``):

* ``report.md``: a Markdown table, one row a group: trials, best, mean of the
  top-k, mean and std over all trials, and Welch's t-test (scipy) of the group's
  trials against the baseline group (default ``vanilla``, as in Greff et al.
  2015, when such a group exists);
* ``report.html``: the same table, the figures embedded (base64), and every run;
* ``boxplot.png``: the metric's distribution per group, the top-k trials of each
  (Greff et al. 2015, Fig. 3), groups significantly different from the baseline
  coloured; ``curves.png``: the validation metric over training steps per run;
* ``runs.csv``: one row a run (group, overrides, metrics).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from scipy import stats  # noqa: E402

DEFAULT_METRICS = ("test/nll", "test/bpc", "test/loss", "test/mse", "test/acc", "test/bleu4")
MAXIMIZED = ("acc", "bleu", "accuracy", "f1")
# keys that index repetitions (seeds, the trials of a search), never variants
REPLICATE_KEYS = ("seed", "greff_trial")


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    curve: pd.DataFrame | None = None
    error: str | None = None


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def read_overrides(path: Path) -> dict[str, str]:
    """``.hydra/overrides.yaml`` (a list of ``key=value``) -> {key: value}."""
    try:
        items = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: malformed YAML: {e}") from e
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of key=value overrides")
    out = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep:
            continue
        out[key.lstrip("+~")] = value
    return out


def read_curve(run_dir: Path) -> pd.DataFrame | None:
    files = sorted(run_dir.glob("csv/version_*/metrics.csv")) or sorted(run_dir.glob("**/metrics.csv"))
    if not files:
        return None
    return pd.read_csv(files[-1])


def find_runs(root: Path) -> list[Run]:
    """Every run folder under ``root`` (recursively), sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    runs = []
    for ov in sorted(root.glob("**/.hydra/overrides.yaml")):
        run_dir = ov.parent.parent
        run = Run(run_dir, read_overrides(ov))
        mfile = run_dir / "metrics.json"
        if mfile.is_file():
            try:
                raw = json.loads(mfile.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{mfile}: malformed JSON at line {e.lineno}: {e.msg}") from e
            run.metrics = {k: f for k, v in raw.items() if (f := _float(v)) is not None}
        else:
            run.error = "no metrics.json (failed or unfinished)"
        run.curve = read_curve(run_dir)
        runs.append(run)
    if not runs:
        raise ValueError(f"no runs under {root} (looked for */.hydra/overrides.yaml)")
    return runs


def swept_keys(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs, in first-seen order."""
    keys: list[str] = []
    for r in runs:
        for k in r.overrides:
            if k not in keys:
                keys.append(k)
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def default_group_keys(runs: list[Run], replicate_keys=REPLICATE_KEYS) -> list[str]:
    """Swept keys whose values repeat across runs (variants), not those new in every run (a search),
    nor the keys that index repetitions (``replicate_keys``)."""
    out = []
    for k in swept_keys(runs):
        if k in replicate_keys or k.startswith("hydra."):
            continue
        values = [r.overrides.get(k) for r in runs]
        if len(set(values)) < len(values):
            out.append(k)
    return out


def group_name(run: Run, keys: list[str]) -> str:
    if not keys:
        return "all"
    if len(keys) == 1:
        return str(run.overrides.get(keys[0], "(default)"))
    return ", ".join(f"{k}={run.overrides.get(k, '(default)')}" for k in keys)


def pick_metric(runs: list[Run], metric: str | None) -> str:
    have = {k for r in runs for k in r.metrics}
    if metric is not None:
        if metric not in have:
            raise ValueError(f"metric {metric!r} is in no run's metrics.json; found: {sorted(have)}")
        return metric
    for m in DEFAULT_METRICS:
        if m in have:
            return m
    raise ValueError(f"none of {DEFAULT_METRICS} in the runs' metrics.json; pass --metric (found: {sorted(have)})")


def _verdict(p: float, group_mean: float, base_mean: float, best_first: bool, alpha: float) -> str:
    if not math.isfinite(p):
        return ""
    better = (group_mean < base_mean) == best_first
    return ("better" if better else "worse") if p < alpha else "no"


def summarize(runs: list[Run], keys: list[str], metric: str, mode: str, top_k: int,
              baseline: str | None, alpha: float,
              replicate_keys: tuple[str, ...] = REPLICATE_KEYS) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """-> (one row a group, {group: its metric values sorted best first}).

    Besides Welch's t-test on all runs of a group against the baseline's, groups whose runs
    carry replicate keys (``greff_trial``, ``seed``) get a paired t-test over the replicates
    both groups ran (the Greff study gives every cell the same hyperparameter draws, so the
    pairs remove the draws' spread): columns ``pairs``, ``paired_t``, ``paired_p``, ``paired``.
    """
    values: dict[str, list[float]] = {}
    by_rep: dict[str, dict[tuple, float]] = {}
    for r in runs:
        v = r.metrics.get(metric)
        if v is None or not math.isfinite(v):
            continue
        g = group_name(r, keys)
        values.setdefault(g, []).append(v)
        rep = tuple((k, r.overrides[k]) for k in replicate_keys if k in r.overrides)
        if rep:
            by_rep.setdefault(g, {})[rep] = v
    best_first = mode == "min"
    for g in values:
        values[g].sort(reverse=not best_first)
    base = values.get(baseline) if baseline else None
    rows = []
    for g, vs in values.items():
        s = pd.Series(vs)
        top = vs[: min(top_k, len(vs))]
        row = {
            "group": g,
            "trials": len(vs),
            "best": vs[0],
            f"top{top_k}_mean": sum(top) / len(top),
            "mean": s.mean(),
            "std": s.std(ddof=1) if len(vs) > 1 else float("nan"),
            "t": float("nan"),
            "p": float("nan"),
            "significant": "",
            "pairs": 0,
            "paired_t": float("nan"),
            "paired_p": float("nan"),
            "paired": "",
        }
        if base is not None and g != baseline:
            base_mean = sum(base) / len(base)
            if len(vs) >= 2 and len(base) >= 2:
                t, p = stats.ttest_ind(vs, base, equal_var=False)
                row["t"], row["p"] = float(t), float(p)
                row["significant"] = _verdict(row["p"], row["mean"], base_mean, best_first, alpha)
            else:
                row["significant"] = "n<2"
            mine, theirs = by_rep.get(g, {}), by_rep.get(baseline, {})
            common = sorted(set(mine) & set(theirs))
            row["pairs"] = len(common)
            if len(common) >= 2:
                a, b = [mine[c] for c in common], [theirs[c] for c in common]
                t, p = stats.ttest_rel(a, b)
                row["paired_t"], row["paired_p"] = float(t), float(p)
                row["paired"] = _verdict(row["paired_p"], sum(a) / len(a), sum(b) / len(b), best_first, alpha)
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values("mean", ascending=best_first, kind="stable").reset_index(drop=True)
    return table, values


def markdown_table(table: pd.DataFrame, metric: str, baseline: str | None) -> str:
    cols = list(table.columns)
    head = "| " + " | ".join(cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n"
    lines = []
    for _, row in table.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            if isinstance(v, float):
                fmt = "{:.3g}" if c in ("p", "paired_p") else "{:.2f}" if c in ("t", "paired_t") else "{:.4f}"
                cells.append("" if math.isnan(v) else fmt.format(v))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    note = f"Metric `{metric}`"
    if baseline:
        note += (f"; Welch's t-test of each group against `{baseline}` (t, p, significant) and a paired "
                 f"t-test over the replicates both ran (pairs, paired_t, paired_p, paired)")
    return f"{note}.\n\n{head}" + "\n".join(lines) + "\n"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def boxplot(values: dict[str, list[float]], order: list[str], metric: str, top_k: int,
            colors: dict[str, str]) -> bytes:
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(order) + 2), 4))
    data = [values[g][:top_k] for g in order]
    bp = ax.boxplot(data, patch_artist=True, widths=0.6)
    ax.set_xticks(range(1, len(order) + 1), order)
    for patch, g in zip(bp["boxes"], order):
        patch.set_facecolor(colors.get(g, "#dddddd"))
    for i, d in enumerate(data, start=1):
        ax.plot([i] * len(d), d, "k.", alpha=0.6)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: the best {top_k} trials of each group")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def curves_plot(runs: list[Run], keys: list[str], metric: str) -> bytes | None:
    val_metric = "val/" + metric.split("/", 1)[-1]
    groups = sorted({group_name(r, keys) for r in runs})
    cmap = plt.get_cmap("tab20" if len(groups) > 10 else "tab10")
    color = {g: cmap(i % cmap.N) for i, g in enumerate(groups)}
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn, labelled = 0, set()
    for r in runs:
        if r.curve is None or val_metric not in r.curve or "step" not in r.curve:
            continue
        d = r.curve[["step", val_metric]].dropna()
        if d.empty:
            continue
        g = group_name(r, keys)
        ax.plot(d["step"], d[val_metric], color=color[g], alpha=0.7, label=None if g in labelled else g)
        labelled.add(g)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel(val_metric)
    ax.set_title(f"learning curves ({drawn} runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def build_report(root: str | Path, out: str | Path | None = None, metric: str | None = None,
                 mode: str | None = None, group_by: list[str] | None = None, baseline: str | None = "vanilla",
                 top_k: int = 10, alpha: float = 0.05,
                 replicate_keys: tuple[str, ...] = REPLICATE_KEYS) -> dict[str, Any]:
    """Read the runs under ``root`` and write the report; returns what it wrote and the table."""
    root = Path(root)
    out = Path(out) if out is not None else root / "report"
    runs = find_runs(root)
    metric = pick_metric(runs, metric)
    if mode is None:
        mode = "max" if any(m in metric for m in MAXIMIZED) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    keys = list(group_by) if group_by else default_group_keys(runs, replicate_keys)
    groups_present = {group_name(r, keys) for r in runs}
    if baseline is not None and baseline not in groups_present:
        baseline = None
    table, values = summarize(runs, keys, metric, mode, top_k, baseline, alpha, replicate_keys)
    if table.empty:
        raise ValueError(f"no run under {root} has a finite {metric!r}")
    out.mkdir(parents=True, exist_ok=True)

    order = list(table["group"])
    sig = dict(zip(table["group"], table["significant"]))
    colors = {g: {"better": "#8fd18f", "worse": "#f08a8a", "no": "#9ec5ec"}.get(sig[g], "#dddddd") for g in order}
    if baseline:
        colors[baseline] = "#ffd27f"
    box_png = boxplot(values, order, metric, top_k, colors)
    curve_png = curves_plot(runs, keys, metric)
    (out / "boxplot.png").write_bytes(box_png)
    if curve_png is not None:
        (out / "curves.png").write_bytes(curve_png)

    run_rows = []
    for r in runs:
        row = {"run": str(r.path.relative_to(root)) if r.path != root else ".", "group": group_name(r, keys)}
        row.update({f"+{k}": v for k, v in r.overrides.items()})
        row.update({k: v for k, v in r.metrics.items() if k.startswith(("val/", "test/"))})
        row["error"] = r.error or ""
        run_rows.append(row)
    runs_df = pd.DataFrame(run_rows)
    runs_df.to_csv(out / "runs.csv", index=False)

    failed = [r for r in runs if r.error]
    md = [f"# Report: {root}\n", f"{len(runs)} runs, grouped by {', '.join(keys) or '(nothing)'}; "
          f"{len(failed)} without metrics. Top-k: k = {top_k}; significance level {alpha}.\n",
          markdown_table(table, metric, baseline), "\n![box plot](boxplot.png)\n"]
    if curve_png is not None:
        md.append("\n![learning curves](curves.png)\n")
    (out / "report.md").write_text("\n".join(md))

    def img(png: bytes, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'

    legend = ("Colours: baseline (orange), significantly better (green), significantly worse (red), "
              "not significantly different (blue), no test (grey)." if baseline else "")
    page = [
        "<!doctype html><html><head><meta charset='utf-8'><title>recur-attn report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}</style>",
        "</head><body>",
        f"<h1>Report: {html.escape(str(root))}</h1>",
        f"<p>{len(runs)} runs, grouped by <code>{html.escape(', '.join(keys) or '(nothing)')}</code>; "
        f"{len(failed)} without metrics. Metric <code>{html.escape(metric)}</code> ({mode}imised); "
        f"top-k with k = {top_k}; Welch's t-test against <code>{html.escape(str(baseline))}</code>, "
        f"significance level {alpha}.</p>",
        table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""),
        "<h2>Distribution per group</h2>", f"<p>{legend}</p>", img(box_png, "box plot"),
    ]
    if curve_png is not None:
        page += ["<h2>Learning curves</h2>", img(curve_png, "learning curves")]
    page += ["<h2>Runs</h2>", runs_df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep=""),
             "</body></html>"]
    (out / "report.html").write_text("\n".join(page))
    return {"out": out, "metric": metric, "mode": mode, "group_by": keys, "baseline": baseline,
            "table": table, "runs": len(runs), "failed": len(failed)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="recur-attn-report", description=__doc__.split("\n")[0])
    ap.add_argument("path", help="a multirun folder (or any folder holding run folders)")
    ap.add_argument("--out", default=None, help="output folder (default PATH/report)")
    ap.add_argument("--metric", default=None, help=f"the metric to compare (default: first of {DEFAULT_METRICS})")
    ap.add_argument("--mode", choices=("min", "max"), default=None, help="lower or higher is better")
    ap.add_argument("--group-by", action="append", default=None,
                    help="override key to group runs by (repeatable; default: the swept keys that repeat)")
    ap.add_argument("--replicate-key", action="append", default=[],
                    help=f"an override key that indexes repetitions, never a group (besides {REPLICATE_KEYS})")
    ap.add_argument("--baseline", default="vanilla", help="group the t-tests compare against (default vanilla)")
    ap.add_argument("--top-k", type=int, default=10, help="trials per group in 'top-k' and the box plots")
    ap.add_argument("--alpha", type=float, default=0.05, help="significance level of the t-tests")
    args = ap.parse_args(argv)
    res = build_report(args.path, args.out, args.metric, args.mode, args.group_by, args.baseline,
                       args.top_k, args.alpha, REPLICATE_KEYS + tuple(args.replicate_key))
    print(markdown_table(res["table"], res["metric"], res["baseline"]))
    print(f"wrote {res['out'] / 'report.html'} and {res['out'] / 'report.md'}")


if __name__ == "__main__":
    main()
