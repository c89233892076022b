"""``recur-attn-caption``: caption images with a trained Show-Attend-Tell checkpoint.

    recur-attn-caption --ckpt logs/sat_shapes/runs/<time>/checkpoints/last.ckpt scene1.png scene2.png
    recur-attn-caption --ckpt ... --beam-size 5 --attention-png out/ photo.jpg

Prints one line per image: ``<path>\\t<caption>``. With ``--attention-png [DIR]``
it also writes ``DIR/<image name>_attention.png``: the image and the attention
of every word (the paper's Figure 2 style). The checkpoint must come from
:class:`recur_attn.tasks.captioning.CaptioningTask` (it stores the network's
configuration, the vocabulary and the image size and normalisation); it is
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from recur_attn.data.captions import load_image
from recur_attn.models.captioner import ShowAttendTell
from recur_attn.tasks.captioning import attention_figure
from recur_attn.utils.checkpoint import load_checkpoint


def load_captioner(ckpt: str | Path) -> tuple[ShowAttendTell, dict[str, Any]]:
    """The network of a CaptioningTask checkpoint (eval mode) and its stored info."""
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt {path}: no such checkpoint file")
    state = load_checkpoint(path)
    info = state.get("captioning")
    if not info or not info.get("itos"):
        raise ValueError(f"{path} is not a captioning checkpoint (no 'captioning' entry with a vocabulary): "
                         f"train it with a model=captioner* config")
    config = dict(info["net_config"])
    config["encoder"] = dict(config["encoder"], weights_path=None)  # the weights come from the checkpoint
    net = ShowAttendTell(**config)
    weights = {}
    for k, v in state["state_dict"].items():
        for prefix in ("net._orig_mod.", "net."):
            if k.startswith(prefix):
                weights[k[len(prefix):]] = v
                break
    net.load_state_dict(weights)
    return net.eval(), info


def caption_images(net: ShowAttendTell, info: dict[str, Any], paths: list[Path], beam_size: int = 3,
                   max_len: int = 20, length_penalty: float = 1.0) -> tuple[list[list[str]], dict, torch.Tensor]:
    """Beam-search captions of image files: (word lists, decoder output, raw images in [0, 1])."""
    size = int(info["image_size"])
    raw = torch.stack([load_image(p, size) for p in paths]).float() / 255.0  # (B, 3, S, S)
    mean = torch.tensor(info["mean"])[:, None, None]
    std = torch.tensor(info["std"])[:, None, None]
    dec = net.beam_search((raw - mean) / std, beam_size=beam_size, max_len=max_len, length_penalty=length_penalty)
    itos = info["itos"]
    captions = []
    for row, n in zip(dec["tokens"].tolist(), dec["lengths"].tolist()):
        captions.append([itos[t] for t in row[:n] if t >= 3])  # words (and <unk>), no <end>
    return captions, dec, raw


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="recur-attn-caption", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a checkpoint written by recur-attn-train with model=captioner*")
    p.add_argument("images", nargs="+", type=Path, help="image files (anything PIL reads)")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--max-len", type=int, default=20)
    p.add_argument("--length-penalty", type=float, default=1.0, help="GNMT's alpha (0: raw log-probability)")
    p.add_argument("--attention-png", nargs="?", const=".", default=None, metavar="DIR",
                   help="write <DIR>/<image>_attention.png for each image (DIR defaults to the current folder)")
    args = p.parse_args(argv)
    missing = [str(x) for x in args.images if not x.is_file()]
    if missing:
        p.error(f"no such image file(s): {', '.join(missing)}")
    net, info = load_captioner(args.ckpt)
    with torch.no_grad():
        captions, dec, raw = caption_images(net, info, args.images, args.beam_size, args.max_len,
                                            args.length_penalty)
    out_dir = Path(args.attention_png) if args.attention_png is not None else None
    if out_dir is not None:
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
    for i, (path, words) in enumerate(zip(args.images, captions)):
        print(f"{path}\t{' '.join(words)}")
        if out_dir is not None:
            n = int(dec["lengths"][i])
            labels = words + ["<end>"] if n > len(words) else words
            fig = attention_figure(raw[i], labels, dec["alphas"][i, :len(labels)], net.encoder.grid,
                                   title=path.name)
            target = out_dir / f"{path.stem}_attention.png"
            fig.savefig(target, dpi=100)
            plt.close(fig)
            print(f"  attention: {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
