"""``recur-attn-translate``: beam-search translations from a trained Seq2Seq checkpoint.

    recur-attn-translate --ckpt logs/dates_attention/runs/<time>/checkpoints/last.ckpt "Sunday, May 3, 1987"
    recur-attn-translate --ckpt ... --file sentences.txt --beam-size 5 --alpha 0.6
    recur-attn-translate --ckpt ... "In the beginning ..." --attention-png out/att.png --nbest 3

Prints one translation a line (with ``--nbest K``: K lines a sentence,
``<rank>\\t<score>\\t<translation>``). ``--attention-png PATH`` saves the
attention map of the best translation (source tokens x output tokens); with
several sentences, ``PATH`` gets the sentence's number before its suffix
(``att-0.png``, ``att-1.png``, ...). The checkpoint must come from
:class:`recur_attn.tasks.seq2seq.Seq2SeqTask` (it stores the network's
arguments and both tokenizers) and is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from recur_attn.data.translation import collate_pairs
from recur_attn.data.vocab import EOS, PAD, Tokenizer, tokenizer_from_dict
from recur_attn.models.seq2seq import Seq2Seq
from recur_attn.utils.checkpoint import load_checkpoint


def load_translator(ckpt: str | Path) -> tuple[Seq2Seq, Tokenizer, Tokenizer]:
    """(net in eval mode, source tokenizer, target tokenizer) of a Seq2SeqTask checkpoint."""
    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"--ckpt {path}: no such checkpoint file")
    state = load_checkpoint(path)
    info: dict[str, Any] | None = state.get("seq2seq")
    if not info or "src_tokenizer" not in info or not info.get("net_config"):
        raise ValueError(f"{path} is not a Seq2Seq checkpoint with tokenizers (no 'seq2seq' entry): "
                         f"train it with a model=seq2seq* config")
    net = Seq2Seq(**info["net_config"])
    weights = {}
    for k, v in state["state_dict"].items():
        for prefix in ("net._orig_mod.", "net."):
            if k.startswith(prefix):
                weights[k[len(prefix):]] = v
                break
    net.load_state_dict(weights)
    return net.eval(), tokenizer_from_dict(info["src_tokenizer"]), tokenizer_from_dict(info["tgt_tokenizer"])


@torch.no_grad()
def translate(net: Seq2Seq, src_tok: Tokenizer, tgt_tok: Tokenizer, sentences: list[str], beam_size: int = 5,
              alpha: float = 0.0, max_len: int | None = None, nbest: int = 1,
              attention_png: str | Path | None = None) -> list[list[tuple[float, str]]]:
    """For each sentence, the ``nbest`` best (score, translation) pairs, best first."""
    if not sentences:
        return []
    if nbest > beam_size:
        raise ValueError(f"--nbest {nbest} exceeds --beam-size {beam_size}")
    ids = [src_tok.encode(s) for s in sentences]
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise ValueError(f"sentence {empty[0]} is empty after tokenisation: {sentences[empty[0]]!r}")
    batch = collate_pairs([(i, x, [EOS]) for i, x in enumerate(ids)])
    src, lengths = batch["src"], batch["src_lengths"]
    if max_len is None:
        max_len = int(lengths.max()) * 2 + 10
    res = net.beam_search(src, lengths, beam_size=beam_size, max_len=max_len, alpha=alpha)
    out = []
    for b in range(len(sentences)):
        out.append([(float(res.scores[b, k]), tgt_tok.decode(res.tokens[b, k].tolist())) for k in range(nbest)])
    if attention_png is not None and net.attention is not None:
        from matplotlib import pyplot as plt

        from recur_attn.utils.attention_plot import plot_attention

        best = res.best()  # (B, L)
        att = net.align(src, lengths, best)  # (B, L, S)
        png = Path(attention_png)
        for b in range(len(sentences)):
            path = png if len(sentences) == 1 else png.with_name(f"{png.stem}-{b}{png.suffix or '.png'}")
            n = int(res.lengths[b, 0])
            s_ids = src[b, : int(lengths[b])].tolist()
            h_ids = [t if t != PAD else EOS for t in best[b, :n].tolist()]
            fig = plot_attention(att[b, :n, : len(s_ids)].numpy(), src_tok.tokens(s_ids), tgt_tok.tokens(h_ids),
                                 title=out[b][0][1][:80], path=path)
            plt.close(fig)
    elif attention_png is not None:
        raise ValueError("--attention-png: this model has no attention (attention='none')")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="recur-attn-translate", description=__doc__.split("\n\n")[0])
    ap.add_argument("sentences", nargs="*", help="sentences to translate")
    ap.add_argument("--ckpt", required=True, help="a Seq2SeqTask checkpoint (.ckpt)")
    ap.add_argument("--file", help="a text file, one sentence a line (added after the arguments)")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--alpha", type=float, default=0.0, help="length penalty exponent (GNMT); 0: none")
    ap.add_argument("--max-len", type=int, default=None, help="longest output (default 2 * source + 10)")
    ap.add_argument("--nbest", type=int, default=1, help="print the K best translations of each sentence")
    ap.add_argument("--attention-png", default=None, help="save the attention map of the best translation")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    sentences = list(args.sentences)
    if args.file:
        p = Path(args.file)
        if not p.is_file():
            ap.error(f"--file {p}: no such file")
        sentences += [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not sentences:
        ap.error("give sentences as arguments or --file")
    if args.beam_size < 1 or args.nbest < 1:
        ap.error("--beam-size and --nbest must be >= 1")
    try:
        net, src_tok, tgt_tok = load_translator(args.ckpt)
        if args.attention_png and len(sentences) > args.batch_size:
            raise ValueError(f"--attention-png draws at most --batch-size ({args.batch_size}) sentences")
        for start in range(0, len(sentences), args.batch_size):
            chunk = sentences[start:start + args.batch_size]
            results = translate(net, src_tok, tgt_tok, chunk, beam_size=args.beam_size, alpha=args.alpha,
                                max_len=args.max_len, nbest=args.nbest, attention_png=args.attention_png)
            for hyps in results:
                if args.nbest == 1:
                    print(hyps[0][1])
                else:
                    for rank, (score, text) in enumerate(hyps, 1):
                        print(f"{rank}\t{score:.4f}\t{text}")
    except (FileNotFoundError, ValueError) as err:
        print(f"recur-attn-translate: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
