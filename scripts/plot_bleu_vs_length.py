#!/usr/bin/env python
"""BLEU against source-sentence length, one line per run (Bahdanau et al. 2014, Figure 2).

Reads the ``test_predictions.tsv`` that :class:`recur_attn.tasks.Seq2SeqTask`
writes in each run folder, buckets the test sentences by source length in
words, and computes corpus BLEU-4 (torchmetrics' SacreBLEUScore, 13a) per
bucket. A run is labelled by its model's ``attention`` (from
``.hydra/config.yaml``) unless ``--labels`` are given::

    python scripts/plot_bleu_vs_length.py logs/bible_en_es/multiruns/<time>/*/ --out docs/figures/bleu_vs_length.png

Prints a table and writes the figure plus a JSON of the numbers beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_predictions(run: Path) -> list[dict[str, str]]:
    p = run / "test_predictions.tsv" if run.is_dir() else run
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no test_predictions.tsv (run the test pass of a Seq2SeqTask)")
    with open(p, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    need = {"src_words", "reference", "hypothesis"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{p}: expected the columns {sorted(need)}")
    return rows


def run_label(run: Path) -> str:
    cfg = run / ".hydra" / "config.yaml"
    if cfg.is_file():
        from omegaconf import OmegaConf

        c = OmegaConf.load(cfg)
        att = OmegaConf.select(c, "model.net.attention", default=None)
        cell = OmegaConf.select(c, "model.net.cell", default=None)
        if att is not None:
            return f"{att} ({cell})" if cell else str(att)
    return run.name


def bleu_by_length(rows: list[dict[str, str]], edges: list[int]) -> list[tuple[str, int, float]]:
    """[(bucket label, sentences, BLEU 0-100)] for buckets [edges[i], edges[i+1])."""
    from torchmetrics.text import SacreBLEUScore

    out = []
    bounds = list(zip(edges[:-1], edges[1:])) + [(edges[-1], None)]
    for lo, hi in bounds:
        sel = [r for r in rows if int(r["src_words"]) >= lo and (hi is None or int(r["src_words"]) < hi)]
        label = f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"
        if not sel:
            out.append((label, 0, float("nan")))
            continue
        m = SacreBLEUScore(n_gram=4, tokenize="13a")
        score = float(m([r["hypothesis"] for r in sel], [[r["reference"]] for r in sel])) * 100
        out.append((label, len(sel), score))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run folders (or test_predictions.tsv files)")
    ap.add_argument("--labels", nargs="*", help="one label a run (default: its attention kind)")
    ap.add_argument("--edges", default="0,10,20,30,40,50", help="bucket edges in source words")
    ap.add_argument("--out", default="bleu_vs_length.png")
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs]
    if args.labels and len(args.labels) != len(runs):
        ap.error(f"{len(args.labels)} labels for {len(runs)} runs")
    edges = [int(e) for e in args.edges.split(",")]
    if edges != sorted(edges) or len(edges) < 2:
        ap.error("--edges must be increasing, at least two")
    results = {}
    try:
        for i, run in enumerate(runs):
            label = args.labels[i] if args.labels else run_label(run)
            results[label] = bleu_by_length(read_predictions(run), edges)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"plot_bleu_vs_length: {err}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in results.items():
        ax.plot(range(len(rows)), [r[2] for r in rows], marker="o", label=label)
    buckets = [r[0] for r in next(iter(results.values()))]
    ax.set_xticks(range(len(buckets)))
    ax.set_xticklabels(buckets)
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("BLEU-4 (test)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    data = {label: [{"bucket": b, "sentences": n, "bleu4": s} for b, n, s in rows] for label, rows in results.items()}
    out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    print("bucket     " + "".join(f"{label:>22}" for label in results))
    for j, b in enumerate(buckets):
        print(f"{b:<10} " + "".join(f"{rows[j][2]:>15.2f} (n={rows[j][1]:>3})" for rows in results.values()))
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
