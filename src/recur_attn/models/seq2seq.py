"""Encoder-decoder networks for sequence transduction, with and without attention.

Encoder (all three forms): embeddings of the source tokens x_1..x_S, a
bidirectional :class:`~recur_attn.layers.Recurrent` of any cell of the zoo;
the annotations h_j = [->h_j; <-h_j] (B, S, K = 2 H_enc) are the keys. The
decoder's initial state is s_0 = tanh(W_s [->h_S; <-h_1]) per state tensor
(Bahdanau et al. 2014 use the backward state alone; the concatenation keeps
both summaries).

Decoders, one step i with previous target token y_{i-1} (the cell is any
cell of the zoo from :func:`recur_attn.cells.build_cell`; s is its state, h
the output part of it):

``attention="bahdanau"`` (Bahdanau, Cho and Bengio 2014, appendix A)::

    c_i   = Attend(query = h_{i-1}, keys = h_1..h_S)          # additive score
    s_i   = cell([E y_{i-1}; c_i], s_{i-1})
    t_i   = tanh(W_t [h_i; c_i; E y_{i-1}])                    # deep output
    p(y_i | y_<i, x) = softmax(W_o t_i)

    (the paper's readout uses s_{i-1} and a maxout; this uses the new
    state h_i and tanh, as most later implementations do.)

``attention="luong"`` (Luong, Pham and Manning 2015, global attention with
input feeding)::

    s_i   = cell([E y_{i-1}; h~_{i-1}], s_{i-1})              # input feeding, h~_0 = 0
    c_i   = Attend(query = h_i, keys = h_1..h_S)              # "general" score
    h~_i  = tanh(W_c [c_i; h_i])                              # attentional hidden state
    p(y_i | y_<i, x) = softmax(W_s h~_i)

``attention="none"``: the RNN encoder-decoder baseline of Cho et al. (2014)
that Bahdanau et al. compare against: the Bahdanau decoder with the fixed
summary c = [->h_S; <-h_1] in place of c_i at every step.

``score`` picks the attention energy: "additive" (v^T tanh(W q + U k)),
"general" (q^T W k) or "dot" (q^T k, needs hidden_size == 2 * encoder_hidden_size).

Training uses teacher forcing (:meth:`Seq2Seq.forward`); decoding is greedy
(:meth:`Seq2Seq.greedy`) or a batched beam search (:meth:`Seq2Seq.beam_search`,
:mod:`recur_attn.models.beam`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recur_attn.cells import build_cell
from recur_attn.layers import Recurrent
from recur_attn.layers.attention import AdditiveAttention, MultiplicativeAttention
from recur_attn.models.beam import BeamResult, beam_search, greedy_search, repeat_beams

ATTENTIONS = ("bahdanau", "luong", "none")
SCORES = ("additive", "general", "dot")


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def lengths_to_mask(lengths: Tensor, max_len: int) -> Tensor:
    """lengths (B,) -> (B, max_len) bool, True at positions < length."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class Seq2Seq(nn.Module):
    """Encoder-decoder with Bahdanau / Luong attention or none (module docstring).

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes (ids 0..V-1).
        cell: a name in ``recur_attn.cells.CELLS``; encoder and decoder use it.
        cell_kwargs: options of the cell (e.g. ``forget_bias``).
        embedding_size: size of the source and target embeddings.
        hidden_size: the decoder's hidden size.
        encoder_hidden_size: each encoder direction's hidden size (default hidden_size).
        encoder_layers: stacked bidirectional encoder layers.
        attention: "bahdanau", "luong" or "none".
        score: "additive", "general" or "dot"; default additive for
            Bahdanau, general for Luong (ignored by "none").
        attention_size: the additive score's hidden size (default hidden_size).
        readout_size: the deep output's size (Bahdanau / none; default hidden_size).
        dropout: on embeddings, between encoder layers and before the output layer.
        pad_id, bos_id, eos_id: the special target ids (source padding is pad_id too).
        impl: the encoder's Recurrent implementation ("auto", "torch", "reference").
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, cell: str = "lstm",
                 cell_kwargs: dict | None = None, embedding_size: int = 64, hidden_size: int = 128,
                 encoder_hidden_size: int | None = None, encoder_layers: int = 1,
                 attention: str = "bahdanau", score: str | None = None,
                 attention_size: int | None = None, readout_size: int | None = None,
                 dropout: float = 0.0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
                 impl: str = "auto") -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; valid: {', '.join(ATTENTIONS)}")
        if score is None:
            score = "general" if attention == "luong" else "additive"
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; valid: {', '.join(SCORES)}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        cell_kwargs = dict(cell_kwargs or {})
        E = _positive("embedding_size", embedding_size)
        H = _positive("hidden_size", hidden_size)
        He = _positive("encoder_hidden_size", encoder_hidden_size if encoder_hidden_size is not None else H)
        K = 2 * He
        R = _positive("readout_size", readout_size if readout_size is not None else H)
        self.config = dict(
            src_vocab_size=int(src_vocab_size), tgt_vocab_size=int(tgt_vocab_size), cell=cell,
            cell_kwargs=cell_kwargs, embedding_size=E, hidden_size=H, encoder_hidden_size=He,
            encoder_layers=int(encoder_layers), attention=attention, score=score,
            attention_size=attention_size, readout_size=R, dropout=float(dropout),
            pad_id=int(pad_id), bos_id=int(bos_id), eos_id=int(eos_id), impl=impl,
        )
        for name in ("pad_id", "bos_id", "eos_id"):
            v = self.config[name]
            if not 0 <= v < tgt_vocab_size:
                raise ValueError(f"{name}={v} is outside the target vocabulary (size {tgt_vocab_size})")
        self.attention_kind = attention
        self.score_kind = score
        self.pad_id, self.bos_id, self.eos_id = int(pad_id), int(bos_id), int(eos_id)
        self.hidden_size, self.key_size = H, K
        self.tgt_vocab_size = _positive("tgt_vocab_size", tgt_vocab_size)

        self.src_embed = nn.Embedding(_positive("src_vocab_size", src_vocab_size), E, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, E, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.encoder = Recurrent(cell, E, He, num_layers=_positive("encoder_layers", encoder_layers),
                                 batch_first=True, dropout=dropout if encoder_layers > 1 else 0.0,
                                 bidirectional=True, impl=impl, **cell_kwargs)
        dec_in = E + (H if attention == "luong" else K)
        self.decoder_cell = build_cell(cell, dec_in, H, **cell_kwargs)
        enc_sizes = self.encoder.cells[0].state_sizes()
        dec_sizes = self.decoder_cell.state_sizes()
        if len(enc_sizes) != len(dec_sizes):  # pragma: no cover - same cell on both sides
            raise ValueError("encoder and decoder cells have different state layouts")
        self.bridge = nn.ModuleList(nn.Linear(2 * a, b) for a, b in zip(enc_sizes, dec_sizes))

        self.attention: nn.Module | None = None
        if attention != "none":
            if score == "additive":
                self.attention = AdditiveAttention(H, K, _positive("attention_size", attention_size or H))
            else:
                if score == "dot" and H != K:
                    raise ValueError(f"score='dot' needs hidden_size == 2 * encoder_hidden_size, got {H} and {K}")
                self.attention = MultiplicativeAttention(H, K, method=score)
        if attention == "luong":
            self.combine = nn.Linear(K + H, H, bias=False)  # W_c
            self.output = nn.Linear(H, tgt_vocab_size)  # W_s
        else:
            self.readout = nn.Linear(H + K + E, R)  # W_t
            self.output = nn.Linear(R, tgt_vocab_size)  # W_o

    # ------------------------------------------------------------------ encoder
    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """src (B, S) long, src_lengths (B,) -> (memory, initial decoder state).

        memory: {"keys" (B, S, K), "mask" (B, S), "keys_proj" (B, S, *) or
        "summary" (B, K)}; decoder state: {"cell": tuple of (B, *) tensors
        [, "feed": (B, H) for Luong]}.
        """
        if src.dim() != 2:
            raise ValueError(f"src must be (B, S) token ids, got {tuple(src.shape)}")
        B, S = src.shape
        src_lengths = src_lengths.to(src.device)
        emb = self.drop(self.src_embed(src))  # (B, S, E)
        keys, state = self.encoder(emb, lengths=src_lengths)  # (B, S, K)
        if isinstance(state, Tensor):
            state = (state,)
        init = []
        for lin, s in zip(self.bridge, state):  # s (L*2, B, size)
            last = torch.cat([s[-2], s[-1]], dim=-1)  # (B, 2*size): forward end, backward end
            init.append(torch.tanh(lin(last)))
        mask = lengths_to_mask(src_lengths, S)  # (B, S)
        memory: dict[str, Tensor] = {"keys": keys, "mask": mask}
        if self.attention is None:
            h = state[0]
            memory["summary"] = torch.cat([h[-2], h[-1]], dim=-1)  # (B, K)
        else:
            memory["keys_proj"] = self.attention.project_keys(keys)
        dstate: dict[str, Any] = {"cell": tuple(init)}
        if self.attention_kind == "luong":
            dstate["feed"] = keys.new_zeros(B, self.hidden_size)
        return memory, dstate

    # ------------------------------------------------------------------ one decoder step
    def _cell(self, x: Tensor, state: tuple[Tensor, ...], t: int) -> tuple[Tensor, ...]:
        new = self.decoder_cell(x, state, t)
        return (new,) if isinstance(new, Tensor) else tuple(new)

    def _features(self, y_prev: Tensor, dstate: dict[str, Any], memory: dict[str, Tensor],
                  t: int) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """One decoder step up to the output layer: (features, new state, weights).

        features: [h_i; c_i; E y_{i-1}] (Bahdanau, none) or h~_i (Luong);
        :meth:`_logits` maps them to the vocabulary (all steps at once when
        teacher forcing).
        """
        emb = self.drop(self.tgt_embed(y_prev))  # (N, E)
        state = dstate["cell"]
        if self.attention_kind == "luong":
            new = self._cell(torch.cat([emb, dstate["feed"]], dim=-1), state, t)
            h = new[0]  # (N, H)
            c, weights = self.attention(h, memory["keys"], mask=memory["mask"], keys_proj=memory["keys_proj"])
            h_tilde = torch.tanh(self.combine(torch.cat([c, h], dim=-1)))  # (N, H)
            return h_tilde, {"cell": new, "feed": h_tilde}, weights
        weights = None
        if self.attention is None:
            c = memory["summary"]  # (N, K)
        else:
            c, weights = self.attention(state[0], memory["keys"], mask=memory["mask"],
                                        keys_proj=memory["keys_proj"])  # query: h_{i-1}
        new = self._cell(torch.cat([emb, c], dim=-1), state, t)
        return torch.cat([new[0], c, emb], dim=-1), {"cell": new}, weights  # (N, H+K+E)

    def _logits(self, features: Tensor) -> Tensor:
        if self.attention_kind != "luong":
            features = torch.tanh(self.readout(features))  # t_i (..., R)
        return self.output(self.drop(features))  # (..., V)

    def decode_step(self, y_prev: Tensor, dstate: dict[str, Any], memory: dict[str, Tensor],
                    t: int) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """y_prev (N,) -> (logits (N, V), new decoder state, attention weights (N, S) or None)."""
        feats, dstate, weights = self._features(y_prev, dstate, memory, t)
        return self._logits(feats), dstate, weights

    # ------------------------------------------------------------------ teacher forcing
    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing. src (B, S), src_lengths (B,), tgt_in (B, T) = [bos, y_1..y_{T-1}].

        Returns (logits (B, T, V), attention weights (B, T, S) or None for "none").
        """
        if tgt_in.dim() != 2 or tgt_in.shape[0] != src.shape[0]:
            raise ValueError(f"tgt_in must be (B={src.shape[0]}, T), got {tuple(tgt_in.shape)}")
        memory, dstate = self.encode(src, src_lengths)
        feats, weights = [], []
        for t in range(tgt_in.shape[1]):
            f, dstate, w = self._features(tgt_in[:, t], dstate, memory, t)
            feats.append(f)
            if w is not None:
                weights.append(w)
        att = torch.stack(weights, dim=1) if weights else None  # (B, T, S)
        return self._logits(torch.stack(feats, dim=1)), att  # (B, T, V): one GEMM for all steps

    # ------------------------------------------------------------------ decoding
    def _step_fn(self, memory: dict[str, Tensor]):
        counter = [0]

        def step(tokens: Tensor, dstate: dict[str, Any]):
            logits, dstate, _ = self.decode_step(tokens, dstate, memory, counter[0])
            counter[0] += 1
            return F.log_softmax(logits.float(), dim=-1), dstate

        return step

    @torch.no_grad()
    def greedy(self, src: Tensor, src_lengths: Tensor, max_len: int = 100) -> tuple[Tensor, Tensor]:
        """Greedy decoding: (tokens (B, L) ending with eos then pad, lengths (B,) incl. eos)."""
        memory, dstate = self.encode(src, src_lengths)
        return greedy_search(self._step_fn(memory), dstate, src.shape[0], bos_id=self.bos_id,
                             eos_id=self.eos_id, pad_id=self.pad_id, max_len=max_len, device=src.device)

    @torch.no_grad()
    def beam_search(self, src: Tensor, src_lengths: Tensor, beam_size: int = 5, max_len: int = 100,
                    alpha: float = 0.0) -> BeamResult:
        """Batched beam search over all sentences and beams at once (models.beam)."""
        memory, dstate = self.encode(src, src_lengths)
        memory = repeat_beams(memory, beam_size)
        return beam_search(self._step_fn(memory), dstate, src.shape[0], beam_size, bos_id=self.bos_id,
                           eos_id=self.eos_id, pad_id=self.pad_id, max_len=max_len, alpha=alpha,
                           device=src.device)

    @torch.no_grad()
    def generate(self, src: Tensor, src_lengths: Tensor, beam_size: int = 1, max_len: int = 100,
                 alpha: float = 0.0) -> Tensor:
        """(B, L) tokens: greedy for beam_size 1, else the best beam."""
        if beam_size <= 1:
            return self.greedy(src, src_lengths, max_len)[0]
        return self.beam_search(src, src_lengths, beam_size, max_len, alpha).best()

    @torch.no_grad()
    def align(self, src: Tensor, src_lengths: Tensor, tokens: Tensor) -> Tensor | None:
        """Attention weights (B, T, S) of the decoder reading ``tokens`` (B, T) (its own output):
        row t is the attention used to emit tokens[:, t]."""
        bos = torch.full_like(tokens[:, :1], self.bos_id)
        _, att = self(src, src_lengths, torch.cat([bos, tokens[:, :-1]], dim=1))
        return att
