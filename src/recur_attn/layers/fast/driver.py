"""Run a whole :class:`~recur_attn.layers.Recurrent` with the fused kernels.

Layers, directions, dropout between layers and padded batches are handled
here exactly as the reference loop does; each (layer, direction) is one call
of a family kernel. A padded batch is sorted by length once (longest first)
so that the kernels can work on the leading ``batch_sizes[t]`` rows of each
step (no per-step masking), and the outputs and final states are put back in
the caller's order at the end.

Under autocast the input projection runs in the autocast dtype (e.g. bf16)
and the recurrence runs in that same dtype: weights and states are cast once
per call (autograd carries the casts' gradients back in float32).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import torch
from torch import Tensor

from ...cells import ClockworkCell, DepthGatedLSTMCell, ElmanCell, GRUCell, LSTMCell, MUTCell, RecurrentCell
from . import native
from .common import chunk_steps, reverse_padded
from .gru import (GRUAfterSequence, GRUBeforeConfig, GRUBeforeProjection, GRUBeforeSequence, gru_after_forward,
                  gru_before_infer)
from .lstm import LSTMConfig, LSTMSequence, lstm_forward, lstm_outputs
from .rnn import ElmanSequence, elman_forward, tick_units

#: every cell name of the zoo has a fused kernel (clockwork: periods forming a divisibility chain)
FUSED_CELLS = ("rnn_tanh", "rnn_relu", "lstm", "vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg",
               "fgr", "gru", "gru_cho", "mut1", "mut2", "mut3", "clockwork", "dglstm")


def supports(cell: RecurrentCell) -> str | None:
    """None if ``cell`` has a fused kernel, else the reason why not."""
    if isinstance(cell, ClockworkCell):
        if tick_units(cell.periods, cell.module_size, 1) is None:
            return (f"clockwork periods {cell.periods} do not form a divisibility chain (each period dividing "
                    f"the next), so the ticking modules are not a prefix")
        return None
    if isinstance(cell, (LSTMCell, DepthGatedLSTMCell, GRUCell, MUTCell, ElmanCell)):
        return None
    return f"no fused kernel for {type(cell).__name__}"


def _block_rows(order_idx: list[int], H: int, device) -> Tensor:
    return torch.cat([torch.arange(k * H, (k + 1) * H, device=device) for k in order_idx])


def _perm(cell: RecurrentCell, key: str, order_idx: list[int], H: int, device) -> Tensor:
    cache = cell.__dict__.setdefault("_fused_perm_cache", {})
    k = (key, str(device))
    if k not in cache:
        cache[k] = _block_rows(order_idx, H, device)
    return cache[k]


def _autocast_off(device_type: str):
    """Autocast off for the kernels (they run in the dtype the driver cast to); no context to enter when
    it is off already (entering and leaving one costs about as much as a small tensor op)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _one_op_inference(x: Tensor) -> bool:
    """Whether a layer-direction's call on x runs as one C++ op (native.lstm_infer, native.elman_infer,
    native.gru_after_infer, native.gru_before_infer): no backward pass, float32/float64 on CPU with the C++
    kernels, autocast off."""
    return not torch.is_grad_enabled() and native.fused_loops_for(x) and not torch.is_autocast_enabled(x.device.type)


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the recurrence runs in: autocast's (e.g. bf16) when it is on, else the input's."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _cast(t: Tensor | None, dt: torch.dtype) -> Tensor | None:
    return t if t is None or t.dtype == dt else t.to(dt)


# ------------------------------------------------------------------ LSTM family
def _lstm_config(cell) -> tuple[LSTMConfig, list[int], list[int] | None]:
    """The kernel's config of an LSTM-family cell, for each of its internal gate blocks the block's index in
    the cell's own layout, and for fgr the same for the gated blocks in W_gh's layout (cell.gated), else None
    (a cell's structure is fixed at construction: computed once)."""
    cached = cell.__dict__.get("_fused_lstm_plan")
    if cached is None:
        H = cell.hidden_size
        if isinstance(cell, DepthGatedLSTMCell):
            blocks = ("i", "f", "g", "o")
            cfg = LSTMConfig(H, depth=cell.has_below)
        else:
            spec = cell.spec
            blocks = cell.blocks
            cfg = LSTMConfig(H, spec.input_gate, spec.forget_gate, spec.output_gate, spec.input_activation,
                             spec.output_activation, spec.peepholes, spec.coupled, spec.full_gate_recurrence)
        gated = [cell.gated.index(n) for n in cfg.order[:-1]] if cfg.fgr else None
        cached = cell.__dict__["_fused_lstm_plan"] = (cfg, [blocks.index(n) for n in cfg.order], gated)
    return cached


def _run_lstm(cell, p, inp, s0, bs, lengths, below, want_cseq):
    H = cell.hidden_size
    dev = inp.device
    cfg, order_idx, gated_order = _lstm_config(cell)
    if _one_op_inference(inp):
        return _infer_lstm(cfg, order_idx + (gated_order or []), p, inp, s0, bs, below, want_cseq)
    rows_ih = _perm(cell, "ih", order_idx + ([len(order_idx)] if cfg.depth else []), H, dev)
    bias = p["bias_ih"] + (torch.nn.functional.pad(p["bias_hh"], (0, H)) if cfg.depth else p["bias_hh"])
    dt = _compute_dtype(inp)
    bias = _cast(bias.index_select(0, rows_ih), dt)
    inp = _cast(inp, dt)
    # the kernels' gate order: W_ih, W_hh (and fgr's W_gh) reordered (index_select, whose backward puts the
    # gradients back); the C++ inference op above reads the cell's own order instead
    rows = _perm(cell, "hh", order_idx, H, dev)
    wih = _cast(p["weight_ih"].index_select(0, rows_ih), dt)
    whh = _cast(p["weight_hh"].index_select(0, rows), dt)
    wgh = a0 = None
    if cfg.fgr:  # W_gh's rows and columns reordered: blocks of H x H, a copy along each of the two block axes
        nG, o3 = len(gated_order), torch.tensor(gated_order, device=dev)
        wgh = _cast(p["weight_gh"].view(nG, H, nG, H).index_select(0, o3).index_select(2, o3)
                    .view(nG * H, nG * H), dt)
        a0 = _cast(s0[2].index_select(1, _perm(cell, "gh", gated_order, H, dev)), dt)
    p_if = p_o = None
    if cfg.peepholes:
        wph = _cast(p["weight_ph"], dt)  # rows follow cell.gated: (i, f) present ones, then o
        k = cfg.peep_if
        p_if = wph[:k] if k else None
        p_o = wph[k] if cfg.output_gate else None
    w_cd = w_ld = None
    if cfg.depth:
        w_cd, w_ld = _cast(p["weight_cd"], dt), _cast(p["weight_ld"], dt)
        below = _cast(below, dt)
    else:
        below = None
    h0, c0 = _cast(s0[0], dt), _cast(s0[1], dt)
    args = (inp, wih, bias, whh, wgh, p_if, p_o, w_cd, w_ld, below, h0, c0, a0)
    with _autocast_off(dev.type):
        if torch.is_grad_enabled():
            outs = LSTMSequence.apply(cfg, bs, lengths, *args, want_cseq)
        else:
            res = lstm_forward(cfg, bs, *args, save=False, want_cseq=want_cseq)
            outs = lstm_outputs(cfg, res, lengths, inp.shape[0], want_cseq)
    out, hT, cT = outs[0], outs[1], outs[2]
    finals = [hT, cT]
    if cfg.fgr:
        inv = [gated_order.index(j) for j in range(len(gated_order))]
        finals.append(outs[3].index_select(1, _perm(cell, "gh_inv", inv, H, dev)))
    cseq = outs[4 if cfg.fgr else 3] if want_cseq else None
    return out, tuple(finals), cseq


def _infer_lstm(cfg: LSTMConfig, blocks: list[int], p, inp, s0, bs, below, want_cseq):
    """_run_lstm without a backward pass or autocast, in float32/float64 on CPU: one C++ op (native.lstm_infer)
    reads the cell's own weights through block maps (no reordered copies of W_ih, W_hh, W_gh: an H=256
    call's largest fixed cost) and does the rest of the call (the biases, the buffers, the final states at
    each row's end), which as ~20 tensor ops was most of a short call's cost. ``blocks``: the cell's block of
    each internal gate block, then fgr's gated blocks (native.lstm_infer)."""
    res = native.lstm_infer(inp, p["weight_ih"], p["bias_ih"], p["bias_hh"], p["weight_hh"],
                            p["weight_gh"] if cfg.fgr else None, p["weight_ph"] if cfg.peepholes else None,
                            p["weight_cd"] if cfg.depth else None, p["weight_ld"] if cfg.depth else None,
                            below if cfg.depth else None, s0[0], s0[1], s0[2] if cfg.fgr else None,
                            chunk_steps(inp.shape[0], inp.shape[1], p["weight_ih"].shape[0]),
                            native.lstm_flags(cfg), blocks, bs or [], want_cseq)
    out, hT, cT, aT, cseq = res
    return out, (hT, cT, aT) if cfg.fgr else (hT, cT), cseq if want_cseq else None


# ------------------------------------------------------------------ GRU family
def _run_gru(cell, p, inp, s0, bs, lengths):
    H = cell.hidden_size
    grad = torch.is_grad_enabled()
    dev = inp.device
    one_op = _one_op_inference(inp)
    if isinstance(cell, GRUCell) and cell.reset_after:
        if one_op:  # the whole call in one op (a short call's fixed cost)
            out, hT = native.gru_after_infer(inp, p["weight_ih"], p["bias_ih"], p["bias_hh"], p["weight_hh"], s0[0],
                                             chunk_steps(inp.shape[0], inp.shape[1], 3 * H), bs or [])
            return out, (hT,), None
        dt = _compute_dtype(inp)
        bhh = p["bias_hh"]
        bias = p["bias_ih"] + torch.cat([bhh[: 2 * H], bhh.new_zeros(H)])  # b_hr, b_hz folded in
        args = (_cast(inp, dt), _cast(p["weight_ih"], dt), _cast(bias, dt), _cast(p["weight_hh"], dt),
                _cast(bhh[2 * H:], dt), _cast(s0[0], dt))
        with _autocast_off(dev.type):
            if grad:
                out, hT = GRUAfterSequence.apply(bs, lengths, *args)
            else:
                out = gru_after_forward(bs, *args, save=False)["H"]
                hT = _final(out, lengths)
        return out, (hT,), None
    dt = _compute_dtype(inp)
    if isinstance(cell, GRUCell):  # Cho's form
        proj = GRUBeforeProjection(H, p["weight_ih"], p["bias_ih"] + p["bias_hh"])
        w1, wz, wn = p["weight_hh"][: 2 * H], None, p["weight_hh"][2 * H:]
        cfg = GRUBeforeConfig(H, "h", keep_z=True)
    else:
        proj = _mut_projection(cell, p)
        W = dict(zip(cell.hh_blocks, p["weight_hh"].split(H, dim=0)))
        wn = W["n"]
        if cell.name == "mut1":
            w1, wz, zf = W["r"], None, "none"
        elif cell.name == "mut2":
            w1, wz, zf = p["weight_hh"][: 2 * H], None, "h"
        else:
            w1, wz, zf = W["r"], W["z"], "tanh_h"
        cfg = GRUBeforeConfig(H, zf, keep_z=False)
    if one_op:
        out, hT = native.gru_before_infer(inp, proj, w1, wz, wn, s0[0], chunk_steps(inp.shape[0], inp.shape[1], 3 * H),
                                          bs or [], cfg.keep_z)
        return out, (hT,), None
    proj = proj.to(dt)
    inp = _cast(inp, dt)
    w1, wz, wn, h0 = _cast(w1, dt), _cast(wz, dt), _cast(wn, dt), _cast(s0[0], dt)
    with _autocast_off(dev.type):
        if grad:
            x2 = inp.reshape(-1, inp.shape[-1])
            if proj.tanh_in_kernel:  # MUT1, projected x: the kernel applies the n block's tanh and b_hh_n
                xw, post, cfg = proj.linear(x2), proj.post_bias, replace(cfg, tanh_n=True)
            else:
                xw, post = proj(x2), None  # (T*B, 3H), a fresh tensor
            out, hT, _ = GRUBeforeSequence.apply(cfg, bs, lengths, xw, w1, wz, wn, h0, post)
        else:
            out = gru_before_infer(cfg, bs, proj, inp, w1, wz, wn, h0)
            hT = _final(out, lengths)
    return out, (hT,), None


def _mut_projection(cell: MUTCell, p) -> GRUBeforeProjection:
    """MUT1-3's input projection (cell.input_projection plus b_hh) as one GEMM in [r, z, n] order."""
    H = cell.hidden_size
    wih, bih = p["weight_ih"].split(H, dim=0), p["bias_ih"].split(H, dim=0)
    bhh = dict(zip(cell.hh_blocks, p["bias_hh"].split(H, dim=0)))
    ident, tanh_ident = cell.identity_block, cell.name == "mut1"
    ks, biases = [], []
    for blk in ("r", "z", "n"):
        if blk in cell.ih_blocks:
            k = cell.ih_blocks.index(blk)
        elif blk == ident and cell.projected:
            k = len(cell.ih_blocks)  # the identity block's projection follows the others
        else:
            continue  # x itself (I == H)
        ks.append(k)
        b = bih[k]
        if blk in bhh and not (blk == ident and tanh_ident):  # MUT1's b_hh_n is added after the tanh
            b = b + bhh[blk]
        biases.append(b)
    post = bhh.get(ident) if ident is not None else None
    # W_ih's blocks already in [r, z, n] order (MUT3; MUT1 with I != H): W_ih itself, no copy
    weight = p["weight_ih"] if ks == list(range(len(wih))) else torch.cat([wih[k] for k in ks])
    return GRUBeforeProjection(H, weight, torch.cat(biases), ident, cell.projected, tanh_ident, post)


def _final(out: Tensor, lengths: Tensor | None) -> Tensor:
    if lengths is None:
        return out[-1].clone()
    return out[lengths.to(out.device) - 1, torch.arange(out.shape[1], device=out.device)]


# ------------------------------------------------------------------ Elman / clockwork
def _run_elman(cell, p, inp, s0, bs, lengths):
    T = inp.shape[0]
    dev = inp.device
    dt = _compute_dtype(inp)
    if isinstance(cell, ClockworkCell):
        whh = p["weight_hh"] * cell.hh_mask.to(device=dev, dtype=p["weight_hh"].dtype)
        units = tick_units(cell.periods, cell.module_size, T)
        relu, periods, msize = False, cell.periods, cell.module_size
    else:
        whh, units, relu, periods, msize = p["weight_hh"], None, cell.nonlinearity == "relu", None, None
    if _one_op_inference(inp):
        # the whole call in one op (a short call's fixed cost)
        out, hT = native.elman_infer(inp, p["weight_ih"], p["bias_ih"], p["bias_hh"], whh, s0[0], units or [],
                                     bs or [], relu)
        return out, (hT,), None
    inp, wih, bias = _cast(inp, dt), _cast(p["weight_ih"], dt), _cast(p["bias_ih"] + p["bias_hh"], dt)
    whh, h0 = _cast(whh, dt), _cast(s0[0], dt)
    with _autocast_off(dev.type):
        if torch.is_grad_enabled():
            out, hT = ElmanSequence.apply(bs, lengths, relu, units, periods, msize, inp, wih, bias, whh, h0)
        else:
            out = elman_forward(bs, inp, wih, bias, whh, h0, relu, units)
            hT = _final(out, lengths)
    return out, (hT,), None


def _run_direction(cell, p, inp, s0, bs, lengths, below, want_cseq):
    if isinstance(cell, (LSTMCell, DepthGatedLSTMCell)):
        return _run_lstm(cell, p, inp, s0, bs, lengths, below, want_cseq)
    if isinstance(cell, (GRUCell, MUTCell)):
        return _run_gru(cell, p, inp, s0, bs, lengths)
    if isinstance(cell, (ElmanCell, ClockworkCell)):
        return _run_elman(cell, p, inp, s0, bs, lengths)
    raise ValueError(f"no fused kernel for {type(cell).__name__}")


# ------------------------------------------------------------------ whole stack
def forward_fused(rnn, x: Tensor, state: tuple[Tensor, ...], lengths: Tensor | None):
    """Same contract as ``Recurrent._forward_reference``: x (T, B, I) -> (out (T, B, D*H), state tuple)."""
    T = x.shape[0]
    D = rnn.num_directions
    bs = order = None
    if lengths is not None and bool((lengths == T).all()):
        lengths = None
    if lengths is not None:
        lengths_cpu = lengths.cpu()
        sorted_len, order = torch.sort(lengths_cpu, descending=True, stable=True)
        bs = (sorted_len[None, :] > torch.arange(T)[:, None]).sum(1).tolist()
        order_dev = order.to(x.device)
        x = x.index_select(1, order_dev)
        state = tuple(s.index_select(1, order_dev) for s in state)
        lengths = sorted_len.to(x.device)
    dglstm = rnn.cell_name == "dglstm"
    finals: list[list[Tensor]] = [[] for _ in range(rnn.num_states)]
    layer_in = x
    below_cells: list[Tensor | None] = [None] * D
    for layer in range(rnn.num_layers):
        outs, cseqs = [], []
        want_cseq = dglstm and layer < rnn.num_layers - 1
        for d in range(D):
            k = layer * D + d
            inp = layer_in if d == 0 else reverse_padded(layer_in, lengths)
            s0 = tuple(s[k] for s in state)
            out, fin, cseq = _run_direction(rnn.cells[k], rnn.cell_params(k), inp, s0, bs, lengths,
                                            below_cells[d], want_cseq)
            if d == 1:
                out = reverse_padded(out, lengths)
            outs.append(out)
            cseqs.append(cseq)
            for j, s in enumerate(fin):
                finals[j].append(s)
        layer_out = outs[0] if D == 1 else torch.cat(outs, dim=-1)  # (T, B, D*H)
        if rnn.dropout and rnn.training and layer < rnn.num_layers - 1:
            layer_out = torch.nn.functional.dropout(layer_out, rnn.dropout, True)
        layer_in = layer_out
        below_cells = cseqs
    new_state = tuple(f[0].unsqueeze(0) if len(f) == 1 else torch.stack(f, 0) for f in finals)
    if order is not None:
        inv = torch.argsort(order).to(x.device)
        layer_in = layer_in.index_select(1, inv)
        new_state = tuple(s.index_select(1, inv) for s in new_state)
    return layer_in, new_state
