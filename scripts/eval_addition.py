"""Whole-sum accuracy of a trained ``experiment=grid_addition`` run.

The training task logs per-character accuracy (``test/acc``); a sum counts as
solved only when every character after "=" is right (greedy decoding then
writes the same sum). This script rebuilds the run's data and model from its
``.hydra/config.yaml``, loads the best (else last) checkpoint and prints both
accuracies on the held-out test sums.

    .venv/bin/python scripts/eval_addition.py logs/grid_addition/runs/<time> [more run dirs]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from recur_attn.cli.common import build_data_and_model
from recur_attn.data.addition import sequence_accuracy
from recur_attn.utils.checkpoint import load_checkpoint


def evaluate(run: Path) -> dict:
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    ckpts = sorted(p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    ckpt = ckpts[-1] if ckpts else run / "checkpoints" / "last.ckpt"
    dm, task = build_data_and_model(cfg)
    state = load_checkpoint(ckpt)["state_dict"]
    task.load_state_dict(state)
    task.eval()
    dm.setup("test")
    right_seq = right_chr = n_seq = n_chr = 0
    with torch.no_grad():
        for batch in dm.test_dataloader():
            logits = task(batch["x"], batch["lengths"])  # (B, T, V)
            y = batch["y"]
            scored = y != -100
            right_chr += int(((logits.argmax(-1) == y) & scored).sum())
            n_chr += int(scored.sum())
            right_seq += float(sequence_accuracy(logits, y)) * len(y)
            n_seq += len(y)
    return {"run": str(run), "model": cfg.model.net._target_.rsplit(".", 1)[-1], "checkpoint": ckpt.name,
            "char_acc": right_chr / n_chr, "sum_acc": right_seq / n_seq, "test_sums": n_seq}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+")
    a = p.parse_args()
    torch.set_num_threads(1)
    print("| model | checkpoint | per-character accuracy | whole-sum accuracy | test sums |")
    print("|---|---|---:|---:|---:|")
    for run in a.runs:
        r = evaluate(run)
        print(f"| {r['model']} | {r['checkpoint']} | {r['char_acc']:.4f} | {r['sum_acc']:.4f} | {r['test_sums']} |")


if __name__ == "__main__":
    main()
