"""Whole-sequence kernel for the LSTM family (the Greff cells, ``lstm``, ``dglstm``).

One :class:`torch.autograd.Function` runs one direction of one layer over all
time steps. The equations are those of :mod:`recur_attn.cells.lstm` and
:mod:`recur_attn.cells.depth_gated`; this module only changes how they are
computed:

* the caller does the input projection of all steps as one GEMM (``xw``,
  biases ``b_ih + b_hh`` folded in) and hands the kernel the recurrent part
  (the C++ loop of native.py does that GEMM itself, without the biases, which
  its fused step adds);
* one fused recurrent GEMM per step, ``addmm(xw_t, h_{t-1}, W_hh^T)``, written
  straight into a preallocated (T, B, G*H) buffer of gate activations;
* gate blocks are kept in the internal order (o, i, f, g) -- present ones
  only -- so that one sigmoid covers all the gated blocks and one product
  with dc covers i, f, g in the backward pass;
* the backward pass is written by hand: it walks the steps backwards,
  overwrites the saved activations with the pre-activation gradients in place
  (no second (T, B, G*H) buffer), and computes the recurrent weight gradient
  with one GEMM after the loop (the input weight and bias gradients come from
  autograd's own GEMM for the input projection); fgr's gate-recurrence weight
  gradient needs the previous step's activations, which the loop overwrites, so
  the C++ loop copies them into a small buffer and runs one GEMM per chunk of
  steps (the torch-op loop, one per step);
* padded batches are sorted by length (longest first) by the caller, so at
  step t only the first ``batch_sizes[t]`` rows are alive: every per-step op
  works on the leading rows ``[:b_t]`` (like cuDNN's packed sequences), rows
  that ended keep their final state without any masking op, and outputs past
  a sequence's end stay zero.

Works on any device torch runs these ops on (CPU, CUDA).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from . import native
from .common import (backward_step_rows, chunk_steps, first_order_only, from_sigmoid_, sigmoid_tanh, stash, take,
                     tanh_out)


@dataclass(frozen=True)
class LSTMConfig:
    """Which terms of the family's equations are present (see cells/lstm.py)."""

    H: int
    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    input_activation: bool = True
    output_activation: bool = True
    peepholes: bool = False
    coupled: bool = False
    fgr: bool = False
    depth: bool = False  # dglstm with a layer below

    @cached_property
    def order(self) -> tuple[str, ...]:
        """Internal order of the fused gate blocks: o, i, f, g (present ones)."""
        out = []
        if self.output_gate:
            out.append("o")
        if self.input_gate:
            out.append("i")
        if self.forget_gate:
            out.append("f")
        out.append("g")
        return tuple(out)

    def off(self, name: str) -> slice | None:
        if name not in self.order:
            return None
        k = self.order.index(name)
        return slice(k * self.H, (k + 1) * self.H)

    @property
    def n_gated(self) -> int:
        return len(self.order) - 1

    @property
    def peep_if(self) -> int:
        """Number of peephole rows that act on c_{t-1} (i and f, when present)."""
        return int(self.input_gate) + int(self.forget_gate) if self.peepholes else 0


def _rows(buf: Tensor, t: int, b: int) -> Tensor:
    return buf[t] if b == buf.shape[1] else buf[t, :b]


def lstm_forward(cfg: LSTMConfig, bs: list[int] | None, inp: Tensor, wih: Tensor, bias: Tensor, whh: Tensor,
                 wgh: Tensor | None, p_if: Tensor | None, p_o: Tensor | None, w_cd: Tensor | None,
                 w_ld: Tensor | None, below: Tensor | None, h0: Tensor, c0: Tensor, a0: Tensor | None,
                 save: bool, want_cseq: bool):
    """Run the layer. inp (T, B, I); wih (G*H [+ H], I), bias: input weights and both biases in
    internal order (the depth gate's block last). Returns a dict of buffers. (Inference in float32/float64 on
    CPU runs native.lstm_infer instead, which reads the cell's own gate order.)"""
    T, B = inp.shape[0], inp.shape[1]
    H = cfg.H
    GH = whh.shape[0]
    dev, dt = inp.device, inp.dtype
    so, si, sf, sg = cfg.off("o"), cfg.off("i"), cfg.off("f"), cfg.off("g")
    # on CPU the elementwise part of a step is one C++ call (native.py) when it can be built
    use_native = native.enabled_for(inp)
    # else g = tanh(a_g) as 2 sigmoid(2 a_g) - 1 (see common.py): the g rows get a factor 2, and one
    # sigmoid covers every block
    sig_g = cfg.input_activation and sigmoid_tanh(inp) and not use_native
    if sig_g:
        wih, bias, whh = wih.clone(), bias.clone(), whh.clone()
        for w in (wih, bias, whh):
            w[sg].mul_(2)
    # input projection, one GEMM; its rows become the gate activations in place. Without a backward
    # pass (inference) it runs in chunks of ``tc`` steps into one small reused buffer: a (T*B, G*H)
    # buffer costs page faults on every call that are a sizeable part of an inference pass on CPU
    x2 = inp.reshape(T * B, -1)
    nP = wih.shape[0]
    tc = T if (save or cfg.fgr) else chunk_steps(T, B, nP)
    if tc == T and not use_native:
        P = torch.addmm(bias, x2, wih.t())  # (T*B, G*H [+ H])
    else:  # the C++ loop fills it (all steps at once when tc == T; in float32/64 without the bias,
        # which its epilogue adds)
        P = torch.empty(tc * B, nP, device=dev, dtype=dt)
    xw = P.view(tc, B, -1)[..., :GH]
    xd = P.view(tc, B, -1)[..., GH:] if cfg.depth else None
    alloc = torch.zeros if bs is not None else torch.empty
    whh_t = whh.t()  # (H, G*H)
    wgh_t = None if wgh is None else wgh.t()
    nG = cfg.n_gated
    peep_o = cfg.peepholes and cfg.output_gate
    # buffers: gate activations, cells, tanh(c), outputs, depth gates
    A = xw  # the kernel owns xw: its rows become the gate activations in place (no copy)
    keep_c = save or want_cseq
    C = alloc(T + 1, B, H, device=dev, dtype=dt) if keep_c else torch.empty(2, B, H, device=dev, dtype=dt)
    C[0] = c0
    TC = None
    if cfg.output_activation:
        TC = alloc(T, B, H, device=dev, dtype=dt) if save else torch.empty(B, H, device=dev, dtype=dt)
    Hout = alloc(T, B, H, device=dev, dtype=dt)
    D = xd  # likewise the depth gates' input projection becomes the depth gates
    if use_native:
        native.lstm_forward_loop(P, x2, wih, bias, tc, whh_t, wgh_t, a0, C, keep_c, TC, save, Hout, h0,
                                 None if p_if is None else p_if.contiguous(), p_o,
                                 below.contiguous() if cfg.depth else None, w_cd, w_ld, bs or [], GH,
                                 native.lstm_flags(cfg))
        return {"A": A, "C": C, "TC": TC, "H": Hout, "D": D, "h0": h0, "P": P}
    tmp = torch.empty(B, H, device=dev, dtype=dt) if not cfg.forget_gate else None
    p_if3 = None if p_if is None else p_if.unsqueeze(0)  # (1, k, H)
    h_prev = h0
    for t in range(T):
        b = B if bs is None else bs[t]
        t_in = t % tc  # this step's row block of the projection buffer
        if tc < T and t_in == 0:
            n = min(tc, T - t)
            torch.addmm(bias, x2[t * B:(t + n) * B], wih.t(), out=P[:n * B])
        a = _rows(A, t_in, b)  # (b, G*H)
        a.addmm_(h_prev[:b] if h_prev.shape[0] != b else h_prev, whh_t)
        if cfg.fgr:
            a_prev = a0[:b] if t == 0 else A[t - 1, :b, :nG * H]
            a[:, :nG * H].addmm_(a_prev, wgh_t)
        c_prev = (C[t, :b] if keep_c else C[t % 2, :b])
        c = (C[t + 1, :b] if keep_c else C[(t + 1) % 2, :b])
        if not keep_c and b < B:
            # rows that ended keep their cell in the alternating buffer
            C[(t + 1) % 2, b:] = C[t % 2, b:]
        if p_if3 is not None:
            k = cfg.peep_if
            lo = H if cfg.output_gate else 0
            a[:, lo:lo + k * H].view(b, k, H).addcmul_(c_prev.unsqueeze(1), p_if3)
        stop = GH if sig_g else nG * H
        a[:, H if peep_o else 0:stop].sigmoid_()
        g = a[:, sg]
        if sig_g:
            from_sigmoid_(g)
        elif cfg.input_activation:
            g.tanh_()
        # c = f * c_prev + i * g   (variants: f = 1, f = 1 - i, i = 1)
        if cfg.forget_gate:
            torch.mul(a[:, sf], c_prev, out=c)
            if cfg.input_gate:
                c.addcmul_(a[:, si], g)
            else:
                c.add_(g)
        elif cfg.coupled:
            tb = tmp[:b]
            torch.sub(g, c_prev, out=tb)
            torch.addcmul(c_prev, a[:, si], tb, out=c)
        elif cfg.input_gate:
            torch.addcmul(c_prev, a[:, si], g, out=c)
        else:
            torch.add(c_prev, g, out=c)
        if cfg.depth:
            d = D[t_in, :b]
            bl = below[t, :b]
            d.addcmul_(c_prev, w_cd)
            d.addcmul_(bl, w_ld).sigmoid_()
            c.addcmul_(d, bl)
        if peep_o:
            o = a[:, so]
            o.addcmul_(c, p_o).sigmoid_()
        h = Hout[t, :b]
        if cfg.output_activation:
            hc = TC[t, :b] if save else TC[:b]
            tanh_out(c, hc)
        else:
            hc = c
        if cfg.output_gate:
            torch.mul(a[:, so], hc, out=h)
        else:
            h.copy_(hc)
        h_prev = Hout[t]
    return {"A": A, "C": C, "TC": TC, "H": Hout, "D": D, "h0": h0, "P": P}


class LSTMSequence(torch.autograd.Function):
    """One direction of one LSTM-family layer over a whole sequence, hand-written backward.

    Inputs (after ``cfg``, ``bs`` = batch sizes per step or None, ``lengths``):
    xw (T, B, G*H) the input projection in internal order with both biases;
    whh (G*H, H); wgh (nG*H, nG*H) or None (fgr); p_if (k, H), p_o (H,)
    peepholes or None; xd (T, B, H), w_cd, w_ld (H,), below (T, B, H) for the
    depth gate or None; h0, c0 (B, H); a0 (B, nG*H) or None (fgr).
    Outputs: out (T, B, H), h_T, c_T (B, H) [, a_T (fgr)] [, c sequence (T, B, H)].
    """

    @staticmethod
    def forward(ctx, cfg, bs, lengths, inp, wih, bias, whh, wgh, p_if, p_o, w_cd, w_ld, below, h0, c0, a0,
                want_cseq):
        res = lstm_forward(cfg, bs, inp, wih, bias, whh, wgh, p_if, p_o, w_cd, w_ld, below, h0, c0, a0,
                           save=True, want_cseq=want_cseq)
        outs = list(lstm_outputs(cfg, res, lengths, inp.shape[0], want_cseq))
        ctx.cfg, ctx.bs, ctx.lengths, ctx.want_cseq = cfg, bs, lengths, want_cseq
        stash(ctx, {k: v for k, v in res.items() if k not in ("A", "D")})  # those two are views of P
        ctx.save_for_backward(inp, wih, whh, wgh, p_if, p_o, w_cd, w_ld, below, a0)
        return tuple(outs)

    @staticmethod
    @first_order_only
    def backward(ctx, dout, dhT, dcT, *rest):
        cfg, bs, lengths = ctx.cfg, ctx.bs, ctx.lengths
        inp, wih, whh, wgh, p_if, p_o, w_cd, w_ld, below, a0 = ctx.saved_tensors
        rest = list(rest)
        daT = rest.pop(0) if cfg.fgr else None
        dcseq = rest.pop(0) if ctx.want_cseq else None
        bufs = take(ctx, "LSTM")
        T, B = inp.shape[0], inp.shape[1]
        P3 = bufs["P"].view(T, B, -1)
        GH = whh.shape[0]
        bufs["A"], bufs["D"] = P3[..., :GH], (P3[..., GH:] if cfg.depth else None)
        grads = lstm_backward(cfg, bs, lengths, bufs, whh, wgh, p_if, p_o, w_cd, w_ld, below, a0,
                              dout, dhT, dcT, daT, dcseq)
        _, dwhh, dwgh, dpif, dpo, _, dwcd, dwld, dbelow, dh0, dc0, da0 = grads
        # the input projection's gradients, one GEMM each, from the pre-activation gradients P
        P = bufs["P"]  # (T*B, G*H [+ H])
        x2 = inp.reshape(-1, inp.shape[-1])
        dinp = torch.mm(P, wih).view(inp.shape) if ctx.needs_input_grad[3] else None
        dwih = torch.mm(P.t(), x2) if ctx.needs_input_grad[4] else None
        dbias = P.sum(0) if ctx.needs_input_grad[5] else None
        return (None, None, None, dinp, dwih, dbias, dwhh, dwgh, dpif, dpo, dwcd, dwld, dbelow, dh0, dc0, da0,
                None)


def lstm_outputs(cfg: LSTMConfig, res: dict, lengths: Tensor | None, T: int, want_cseq: bool):
    A, C, Hout = res["A"], res["C"], res["H"]
    if lengths is None:
        hT, cT = Hout[T - 1].clone(), C[T if C.shape[0] == T + 1 else T % 2].clone()
    else:
        idx = lengths.to(Hout.device)
        ar = torch.arange(Hout.shape[1], device=Hout.device)
        hT = Hout[idx - 1, ar]
        cT = C[idx, ar] if C.shape[0] == T + 1 else C[T % 2].clone()
    outs = [Hout, hT, cT]
    if cfg.fgr:
        nGH = cfg.n_gated * cfg.H
        aT = A[T - 1, :, :nGH].clone() if lengths is None else A[idx - 1, ar, :nGH]
        outs.append(aT)
    if want_cseq:
        outs.append(C[1:])
    return outs


def lstm_backward(cfg, bs, lengths, bufs, whh, wgh, p_if, p_o, w_cd, w_ld, below, a0,
                  dout, dhT, dcT, daT, dcseq):
    A, C, TC, D = bufs["A"], bufs["C"], bufs["TC"], bufs["D"]
    T, B, _ = A.shape
    H = cfg.H
    nGH = cfg.n_gated * H
    dev, dt = A.device, A.dtype
    ar = torch.arange(B, device=dev)
    last = None if lengths is None else lengths.to(dev) - 1

    # dh of every step: the output's gradient plus the final state's at each true end
    DH = torch.zeros(T, B, H, device=dev, dtype=dt) if dout is None else dout.clone(memory_format=torch.contiguous_format)
    if dhT is not None:
        if last is None:
            DH[T - 1] += dhT
        else:
            DH.index_put_((last, ar), dhT, accumulate=True)
    # carries: rows that have not started yet (in backward order) hold the final state's gradient
    dc_a = torch.zeros(B, H, device=dev, dtype=dt) if dcT is None else dcT.clone()
    dc_b = dc_a.clone()
    E = dwgh = None
    if cfg.fgr:
        E = torch.zeros(B, nGH, device=dev, dtype=dt) if daT is None else daT.clone()
        dwgh = torch.zeros_like(wgh)
    dbelow = torch.zeros_like(below) if cfg.depth else None
    if native.enabled_for(A):  # the same loop in C++ (CPU); dc_a ends holding dc_0
        native.lstm_backward_loop(A, C, TC, DH, dc_a, dc_b, dcseq, whh, wgh, a0, E, dwgh,
                                  None if p_if is None else p_if.contiguous(), p_o, D,
                                  below.contiguous() if cfg.depth else None, dbelow, w_cd, w_ld, bs or [],
                                  native.lstm_flags(cfg), chunk_steps(T, B, nGH) if cfg.fgr else 0)
    else:
        dc_a = _backward_steps(cfg, bs, A, C, TC, D, DH, dc_a, dc_b, E, dwgh, dcseq, whh, wgh, a0, p_if, p_o,
                               w_cd, w_ld, below, dbelow)
    return _weight_grads(cfg, bufs, A, C, D, dc_a, E, whh, dwgh, p_if, below, dbelow)


def _backward_steps(cfg, bs, A, C, TC, D, DH, dc_a, dc_b, E, dwgh, dcseq, whh, wgh, a0, p_if, p_o, w_cd, w_ld,
                    below, dbelow):
    """The step loop of the backward pass with torch ops (CUDA, or CPU without the C++ kernels).
    Overwrites A (and D) with the pre-activation gradients; returns the dc carry holding dc_0."""
    T, B, _ = A.shape
    H = cfg.H
    nGH = cfg.n_gated * H
    dev, dt = A.device, A.dtype
    so, si, sf, sg = cfg.off("o"), cfg.off("i"), cfg.off("f"), cfg.off("g")
    peep_o = cfg.peepholes and cfg.output_gate
    t1 = torch.empty(B, H, device=dev, dtype=dt)
    t2 = torch.empty(B, H, device=dev, dtype=dt)
    t3 = torch.empty(B, H, device=dev, dtype=dt)
    k_if = cfg.peep_if
    lo_if = H if cfg.output_gate else 0  # first column of the i/f blocks
    for t, b, b1 in backward_step_rows(A, bs):  # rows past their end: no gradient (A holds projections there)
        if b < B and D is not None:
            D[t, b:].zero_()
        a = A[t, :b]  # activations of step t -> overwritten with d(pre-activations)
        dh = DH[t, :b]
        if b1:
            dh[:b1].addmm_(A[t + 1, :b1], whh)
        dc, dcn = dc_a[:b], dc_b[:b]
        c_prev = C[t, :b]
        c = C[t + 1, :b]
        e = E[:b] if E is not None else None
        if dcseq is not None:
            dc.add_(dcseq[t, :b])
        hc = TC[t, :b] if cfg.output_activation else c
        # ---- h = o * hc
        if cfg.output_gate:
            o = a[:, so]
            dhc = torch.mul(dh, o, out=t1[:b])
            base_o = torch.mul(dh, hc, out=t2[:b])  # dL/do
            if e is not None:
                base_o.add_(e[:, so])
        else:
            dhc = dh
        dc.add_(dhc)
        if cfg.output_activation:  # dc += dhc * (1 - hc^2)
            dhc.mul_(hc)
            dc.addcmul_(dhc, hc, value=-1)
        if cfg.output_gate:
            # da_o = base_o * o * (1 - o), over o
            torch.addcmul(o, o, o, value=-1, out=o)
            o.mul_(base_o)
            if peep_o:
                dc.addcmul_(o, p_o)
        # ---- depth gate: c += d * below, d = sigma(xd + w_cd c_prev + w_ld below)
        if cfg.depth:
            d = D[t, :b]
            bl = below[t, :b]
            dbl = dbelow[t, :b]
            torch.mul(dc, d, out=dbl)
            dd = torch.mul(dc, bl, out=t2[:b])
            torch.addcmul(d, d, d, value=-1, out=d)
            d.mul_(dd)  # da_d
            dbl.addcmul_(d, w_ld)
        # ---- dc is complete; dc_prev through the forget path
        if cfg.forget_gate:
            torch.mul(dc, a[:, sf], out=dcn)
        elif cfg.coupled:
            torch.addcmul(dc, dc, a[:, si], value=-1, out=dcn)  # dc * (1 - i)
        else:
            dcn.copy_(dc)
        g = a[:, sg]
        if cfg.input_gate:
            i = a[:, si]
            # i * g' where g' is the input activation's derivative, into t3
            if cfg.input_activation:
                torch.mul(g, g, out=t3[:b])
                torch.addcmul(i, i, t3[:b], value=-1, out=t3[:b])  # i (1 - g^2)
            else:
                t3[:b].copy_(i)
            # da_i = (dc * g_or_(g - c_prev) + e_i) * i (1 - i)
            torch.addcmul(i, i, i, value=-1, out=i)
            if cfg.coupled:
                g.sub_(c_prev)
            if e is None:
                i.mul_(g)
            else:
                torch.addcmul(e[:, si], dc, g, out=t2[:b])
                i.mul_(t2[:b])
            g.copy_(t3[:b])
        elif cfg.input_activation:
            torch.addcmul(torch.ones((), device=dev, dtype=dt), g, g, value=-1, out=g)  # 1 - g^2
        else:
            g.fill_(1.0)
        if cfg.forget_gate:
            f = a[:, sf]
            torch.addcmul(f, f, f, value=-1, out=f)
            if e is None:
                f.mul_(c_prev)
            else:
                torch.addcmul(e[:, sf], dc, c_prev, out=t2[:b])
                f.mul_(t2[:b])
        # multiply the blocks that scale with dc (i, f, g without fgr; g alone with it) by dc
        first = si if cfg.input_gate else (sf if cfg.forget_gate else sg)
        if e is None:
            blk = a[:, first.start:sg.stop]
            nb = (sg.stop - first.start) // H
            blk.view(b, nb, H).mul_(dc.unsqueeze(1))
        else:
            g.mul_(dc)
        # peepholes on c_prev and the depth gate's w_cd feed dc_prev
        for j in range(k_if):
            dcn.addcmul_(a[:, lo_if + j * H:lo_if + (j + 1) * H], p_if[j])
        if cfg.depth:
            dcn.addcmul_(D[t, :b], w_cd)
        if cfg.fgr:
            dag = a[:, :nGH]
            a_prev = a0[:b] if t == 0 else A[t - 1, :b, :nGH]
            dwgh.addmm_(dag.t(), a_prev)
            torch.mm(dag, wgh, out=E[:b])
        dc_a, dc_b = dc_b, dc_a
    return dc_a


def _weight_grads(cfg, bufs, A, C, D, dc_a, E, whh, dwgh, p_if, below, dbelow):
    """After the step loop: the weight gradients with one GEMM (or one reduction) each."""
    T, _, GH = A.shape
    H = cfg.H
    so = cfg.off("o")
    peep_o = cfg.peepholes and cfg.output_gate
    k_if = cfg.peep_if
    lo_if = H if cfg.output_gate else 0  # first column of the i/f blocks
    Hout = bufs["H"]
    dA = A  # (T, B, G*H) pre-activation gradients
    dh0 = torch.mm(dA[0], whh)
    dc0 = dc_a
    dwhh = torch.mm(dA[0].t(), bufs["h0"])
    if T > 1:
        dwhh.addmm_(dA[1:].reshape(-1, GH).t(), Hout[:-1].reshape(-1, H))
    Cprev = C[:T].reshape(-1, H)
    dpif = dpo = None
    if k_if:
        dpif = torch.stack([
            (dA[:, :, lo_if + j * H:lo_if + (j + 1) * H].reshape(-1, H) * Cprev).sum(0) for j in range(k_if)])
    if peep_o:
        dpo = (dA[:, :, so].reshape(-1, H) * C[1:].reshape(-1, H)).sum(0)
    dxd = dwcd = dwld = None
    if cfg.depth:
        dxd = D
        dwcd = (D.reshape(-1, H) * Cprev).sum(0)
        dwld = (D * below).sum((0, 1))
    da0 = E if cfg.fgr else None
    return dA, dwhh, dwgh, dpif, dpo, dxd, dwcd, dwld, dbelow, dh0, dc0, da0
