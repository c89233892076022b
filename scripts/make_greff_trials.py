"""Write conf/greff_trial/tNN.yaml: the random-search draws of the Greff study (experiment=greff_jsb).

Greff et al. 2015 sample, per trial: learning rate log-uniform, hidden size log-uniform,
input noise (std of Gaussian noise on the inputs) uniform. Every cell of the study gets the
same draws (a paired design), so the basic sweeper runs cells x trials from a fixed list.

    python scripts/make_greff_trials.py --n 20 --seed 2015
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def draws(n: int, seed: int, lr=(1e-4, 3e-2), hidden=(20, 200), noise=(0.0, 1.0)) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append({
            "lr": float(f"{math.exp(rng.uniform(math.log(lr[0]), math.log(lr[1]))):.3g}"),
            "hidden_size": int(round(math.exp(rng.uniform(math.log(hidden[0]), math.log(hidden[1]))))),
            "input_noise": round(rng.uniform(*noise), 3),
        })
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2015)
    ap.add_argument("--out", default=str(ROOT / "conf" / "greff_trial"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("t*.yaml"):
        old.unlink()
    for i, d in enumerate(draws(args.n, args.seed)):
        (out / f"t{i:02d}.yaml").write_text(
            "# @package _global_\n"
            f"# Greff-study trial {i} (scripts/make_greff_trials.py --n {args.n} --seed {args.seed})\n"
            f"model:\n  optimizer:\n    lr: {d['lr']}\n  net:\n"
            f"    hidden_size: {d['hidden_size']}\n    input_noise: {d['input_noise']}\n"
        )
    print(f"wrote {args.n} trials to {out}")


if __name__ == "__main__":
    main()
