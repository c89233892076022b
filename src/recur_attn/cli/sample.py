"""``recur-attn-sample``: sample text from a character-LM checkpoint.

    recur-attn-sample --ckpt logs/shakespeare_charlm/runs/<time>/checkpoints/last.ckpt \\
        --prime "ROMEO:" --temperature 0.8 --length 500

The checkpoint (written by ``recur-attn-train model=charlm ...``) holds the net's
arguments and the vocabulary, so no config is needed. Loaded with
``weights_only=True``. Prints the prime followed by the sample.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from recur_attn.models.charlm import CharLM
from recur_attn.utils.checkpoint import load_checkpoint


def load_charlm(ckpt: str | Path) -> tuple[CharLM, list[str]]:
    """A Lightning checkpoint of CharLMTask -> (the CharLM in eval mode, the vocabulary)."""
    path = Path(ckpt)
    data = load_checkpoint(path)  # weights only; clear errors for missing, corrupt or unsafe files
    if not isinstance(data, dict) or "charlm_config" not in data or "vocab" not in data:
        raise ValueError(f"{path}: not a character-LM checkpoint (no charlm_config / vocab; "
                         f"train one with model=charlm)")
    net = CharLM(**data["charlm_config"])
    state = {}
    for k, v in data["state_dict"].items():
        if k.startswith("net."):
            state[k[len("net."):].replace("_orig_mod.", "")] = v
    net.load_state_dict(state, strict=True)
    return net.eval(), list(data["vocab"])


def sample_text(net: CharLM, vocab: list[str], prime: str, length: int, temperature: float,
                seed: int | None = None) -> str:
    """The ``length`` characters the model writes after ``prime``."""
    stoi = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(prime) - set(stoi))
    if unknown:
        raise ValueError(f"prime has characters the model never saw: {unknown!r}")
    if not prime:
        raise ValueError("prime must not be empty")
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    ids = net.generate(torch.tensor([stoi[c] for c in prime]), length, temperature, generator=g)
    return "".join(vocab[int(i)] for i in ids)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="recur-attn-sample", description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True, help="a checkpoint of model=charlm")
    ap.add_argument("--prime", default="\n", help="text to start from (default: a newline)")
    ap.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy")
    ap.add_argument("--length", type=int, default=500, help="characters to sample")
    ap.add_argument("--seed", type=int, default=None, help="random seed of the sampler")
    ap.add_argument("--out", default=None, help="also write the text to this file")
    args = ap.parse_args(argv)
    net, vocab = load_charlm(args.ckpt)
    text = args.prime + sample_text(net, vocab, args.prime, args.length, args.temperature, args.seed)
    sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
