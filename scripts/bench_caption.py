#!/usr/bin/env python
"""Time one training step (forward + backward) of the Show-Attend-Tell decoder:
recur_attn's decoder against the common tutorial implementation.

The reference (written below, after the widely copied "a-PyTorch-Tutorial-to-
Image-Captioning" decoder) loops over time with an ``nn.LSTMCell``, sorts the
batch by caption length, shrinks the active batch every step, recomputes the
attention's key projection U a_i every step and applies the vocabulary
projection inside the loop. It computes the same function as
:class:`recur_attn.models.captioner.ShowAttendTell` (soft attention, gating
scalar, tanh-MLP initial state, deep output, doubly stochastic regulariser),
so the two are timed on the same weights and their losses and gradients are
checked to agree first.

Default sizes are the issue's: batch 32, 196 annotation vectors of size 2048
(ResNet-101 features at 14x14), attention 512, embedding 512, decoder 512,
vocabulary 10,000, captions of 20 tokens. The table is printed and written
into the "Caption decoder" section of docs/benchmarks.md.

    python scripts/bench_caption.py                  # the issue's sizes
    python scripts/bench_caption.py --batch 8 --vocab 1000 --repeats 2 --no-write
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from recur_attn.models.captioner import END, PAD, START, ShowAttendTell
from recur_attn.utils.benchmarks import replace_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Caption decoder"


# --------------------------------------------------------------------------- the reference
class RefAttention(nn.Module):
    """The tutorial's attention: U a recomputed at every call."""

    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim, bias=False)
        self.full_att = nn.Linear(attention_dim, 1, bias=False)

    def forward(self, encoder_out, decoder_hidden):
        att1 = self.encoder_att(encoder_out)  # (b, L, A): every step
        att2 = self.decoder_att(decoder_hidden)  # (b, A)
        att = self.full_att(torch.tanh(att1 + att2.unsqueeze(1))).squeeze(2)  # (b, L)
        alpha = torch.softmax(att, dim=1)
        awe = (encoder_out * alpha.unsqueeze(2)).sum(dim=1)  # (b, D)
        return awe, alpha


class RefDecoder(nn.Module):
    """The tutorial's DecoderWithAttention, with the paper's scalar gate, tanh
    initial state and deep output (as in recur_attn's decoder)."""

    def __init__(self, attention_dim, embed_dim, decoder_dim, vocab_size, encoder_dim, dropout=0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.attention = RefAttention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, 1)
        self.L_h = nn.Linear(decoder_dim, embed_dim)
        self.L_z = nn.Linear(encoder_dim, embed_dim)
        self.L_o = nn.Linear(embed_dim, vocab_size)

    def forward(self, encoder_out, encoded_captions, caption_lengths):
        batch_size, num_pixels = encoder_out.shape[:2]
        caption_lengths, sort_ind = caption_lengths.sort(dim=0, descending=True)
        encoder_out = encoder_out[sort_ind]
        encoded_captions = encoded_captions[sort_ind]
        embeddings = self.embedding(encoded_captions)
        mean = encoder_out.mean(dim=1)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        decode_lengths = (caption_lengths - 1).tolist()
        predictions = torch.zeros(batch_size, max(decode_lengths), self.vocab_size)
        alphas = torch.zeros(batch_size, max(decode_lengths), num_pixels)
        for t in range(max(decode_lengths)):
            bt = sum(1 for n in decode_lengths if n > t)
            awe, alpha = self.attention(encoder_out[:bt], h[:bt])
            gate = torch.sigmoid(self.f_beta(h[:bt]))
            awe = gate * awe
            emb = self.dropout(embeddings[:bt, t])
            h, c = self.decode_step(torch.cat([emb, awe], dim=1), (h[:bt], c[:bt]))
            preds = self.L_o(self.dropout(emb + self.L_h(h) + self.L_z(awe)))  # (bt, V) every step
            predictions[:bt, t] = preds
            alphas[:bt, t] = alpha
        return predictions, encoded_captions, decode_lengths, alphas, sort_ind


def reference_loss(ref: RefDecoder, feats, caps, lens, lam: float):
    scores, caps_sorted, decode_lengths, alphas, _ = ref(feats, caps, lens)
    targets = caps_sorted[:, 1:]
    scores = pack_padded_sequence(scores, decode_lengths, batch_first=True).data
    targets = pack_padded_sequence(targets, decode_lengths, batch_first=True).data
    loss = F.cross_entropy(scores, targets)
    return loss + lam * ((1.0 - alphas.sum(dim=1)) ** 2).sum(dim=1).mean()


def fast_loss(model: ShowAttendTell, feats, caps, lens):
    return model.loss(model(None, caps, lens, features=feats))["loss"]


@torch.no_grad()
def copy_weights(model: ShowAttendTell, ref: RefDecoder) -> None:
    """Give the reference the fast decoder's weights."""
    if model.cell.num_states != 2 or set(model.cell.params()) != {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}:
        raise ValueError("the reference is an nn.LSTMCell: build the fast decoder with cell='lstm'")
    att = model.attention
    pairs = [
        (ref.embedding.weight, model.embedding.weight),
        (ref.attention.encoder_att.weight, att.key_proj.weight), (ref.attention.encoder_att.bias, att.key_proj.bias),
        (ref.attention.decoder_att.weight, att.query_proj.weight), (ref.attention.full_att.weight, att.v.weight),
        (ref.init_h.weight, model.init_state[0].weight), (ref.init_h.bias, model.init_state[0].bias),
        (ref.init_c.weight, model.init_state[1].weight), (ref.init_c.bias, model.init_state[1].bias),
        (ref.f_beta.weight, model.f_beta.weight), (ref.f_beta.bias, model.f_beta.bias),
        (ref.L_h.weight, model.L_h.weight), (ref.L_h.bias, model.L_h.bias),
        (ref.L_z.weight, model.L_z.weight), (ref.L_z.bias, model.L_z.bias),
        (ref.L_o.weight, model.L_o.weight), (ref.L_o.bias, model.L_o.bias),
    ]
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        pairs.append((getattr(ref.decode_step, name), getattr(model.cell, name)))
    for dst, src in pairs:
        dst.copy_(src)


def build_pair(batch=32, locations=196, features=2048, attention=512, embed=512, hidden=512, vocab=10_000,
               tokens=20, lam=1.0, seed=0, varied=False):
    """The fast decoder, the reference with the same weights, and a batch:
    features (B, L, D), captions (B, tokens) and lengths (all ``tokens``, or
    uniform in [tokens // 2, tokens] with ``varied``)."""
    torch.manual_seed(seed)
    model = ShowAttendTell(vocab, encoder=dict(name="small", grid=1, channels=[features]), cell="lstm",
                           embed_size=embed, hidden_size=hidden, attention_size=attention, attention="soft",
                           dropout=0.0, doubly_stochastic=lam)
    model.encoder = None  # the decoder alone is timed: features come in ready
    ref = RefDecoder(attention, embed, hidden, vocab, features)
    copy_weights(model, ref)
    g = torch.Generator().manual_seed(seed + 1)
    feats = torch.randn(batch, locations, features, generator=g).relu()
    if varied:
        lens = torch.randint(max(tokens // 2, 3), tokens + 1, (batch,), generator=g)
    else:
        lens = torch.full((batch,), tokens)
    caps = torch.randint(END + 2, vocab, (batch, tokens), generator=g)
    caps[:, 0] = START
    ar = torch.arange(tokens)[None, :]
    caps[ar == (lens - 1)[:, None]] = END
    caps[ar >= lens[:, None]] = PAD
    return model, ref, feats, caps, lens


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    model, ref, feats, caps, lens = build_pair(args.batch, args.locations, args.features, args.attention,
                                               args.embed, args.hidden, args.vocab, args.tokens, args.lam,
                                               varied=args.varied)
    # equal numerics first: loss and gradients on the same weights
    lf, lr = fast_loss(model, feats, caps, lens), reference_loss(ref, feats, caps, lens, args.lam)
    lf.backward()
    lr.backward()
    gdiff = max(float((model.L_o.weight.grad - ref.L_o.weight.grad).abs().max()),
                float((model.attention.key_proj.weight.grad - ref.attention.encoder_att.weight.grad).abs().max()),
                float((model.cell.weight_ih.grad - ref.decode_step.weight_ih.grad).abs().max()))
    model.zero_grad(), ref.zero_grad()

    def step_fast():
        model.zero_grad(set_to_none=True)
        fast_loss(model, feats, caps, lens).backward()

    def step_ref():
        ref.zero_grad(set_to_none=True)
        reference_loss(ref, feats, caps, lens, args.lam).backward()

    t_ref = _time(step_ref, args.repeats)
    t_fast = _time(step_fast, args.repeats)
    return {"loss_fast": float(lf.detach()), "loss_ref": float(lr.detach()), "max_grad_diff": gdiff,
            "ref_s": statistics.median(t_ref), "fast_s": statistics.median(t_fast), "ref_all": t_ref,
            "fast_all": t_fast}


def table(args, res: dict) -> str:
    speed = res["ref_s"] / res["fast_s"]
    lines = [
        f"One training step (forward + backward, no optimizer) of the decoder; batch {args.batch}, "
        f"{args.locations} annotation vectors of size {args.features}, attention {args.attention}, "
        f"embedding {args.embed}, decoder {args.hidden} (LSTM), vocabulary {args.vocab:,}, captions of "
        f"{args.tokens} tokens{' (lengths varied)' if args.varied else ''}, doubly stochastic lambda {args.lam}. "
        f"CPU, torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}; "
        f"median of {args.repeats} after a warm-up.",
        "",
        "| implementation | s / step | speed-up | loss |",
        "|---|---:|---:|---:|",
        f"| reference (tutorial: nn.LSTMCell, sorted + shrinking batch, U a every step) | {res['ref_s']:.3f} "
        f"| 1.00x | {res['loss_ref']:.6f} |",
        f"| recur_attn ShowAttendTell (masks, U a once, vocabulary GEMM after the loop) | {res['fast_s']:.3f} "
        f"| {speed:.2f}x | {res['loss_fast']:.6f} |",
        "",
        f"Equal numerics: |loss difference| = {abs(res['loss_fast'] - res['loss_ref']):.2e}, largest gradient "
        f"difference (L_o, U, W_ih) = {res['max_grad_diff']:.2e}. All timings (s): reference "
        f"{[round(t, 3) for t in res['ref_all']]}, fast {[round(t, 3) for t in res['fast_all']]}.",
        "",
        f"Command: `python scripts/bench_caption.py {' '.join(sys.argv[1:])}`".rstrip(),
    ]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--locations", type=int, default=196)
    p.add_argument("--features", type=int, default=2048)
    p.add_argument("--attention", type=int, default=512)
    p.add_argument("--embed", type=int, default=512)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--vocab", type=int, default=10_000)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--lam", type=float, default=1.0, help="doubly stochastic lambda")
    p.add_argument("--varied", action="store_true", help="caption lengths uniform in [tokens/2, tokens]")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    res = run(args)
    body = table(args, res)
    print(body)
    if not args.no_write:
        replace_section(args.out, SECTION, body)
        print(f"\nwritten to {args.out}")
    return res


if __name__ == "__main__":
    main()
