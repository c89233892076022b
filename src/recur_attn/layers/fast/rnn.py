"""Whole-sequence kernels for Elman networks (``rnn_tanh``, ``rnn_relu``) and ``clockwork``.

Same scheme as :mod:`.lstm` (one GEMM for the input projection, one fused
recurrent GEMM per step into preallocated buffers, a hand-written backward,
length-sorted padded batches). Equations: :mod:`recur_attn.cells.rnn` and
:mod:`recur_attn.cells.clockwork`.

Clockwork skips the modules that do not tick. With periods that form a
divisibility chain (the default 2^k, or any where each period divides the
next) the modules that tick at step t are always a prefix 0..m_t-1, so the
step computes only the first ``u_t = m_t * module_size`` units:
``h_t[:, :u] = tanh(xw_t[:, :u] + h_{t-1} W_hh[:u]^T)`` and copies the rest,
and the backward does the same; the recurrent weight gradient of module k
uses only the steps where k ticks (a strided view, every T_k-th step). With
4 modules of periods 1, 2, 4, 8 that is about 47% of an Elman net's recurrent
FLOPs.
"""

from __future__ import annotations

import torch

from . import native
from .common import backward_step_rows, first_order_only
from .common import dh_buffer as _dh_buffer
from .common import final_states as _finals
from .common import tanh_


def tick_units(periods: tuple[int, ...], module_size: int, T: int) -> list[int] | None:
    """Units updated at each step t (a prefix of the hidden layer), or None if the periods are no chain."""
    if any(b % a for a, b in zip(periods, periods[1:])):
        return None
    out = []
    for t in range(T):
        m = sum(1 for p in periods if t % p == 0)
        out.append(m * module_size)
    return out


def elman_forward(bs, inp, wih, bias, whh, h0, relu: bool, units: list[int] | None):
    """inp (T, B, I); wih (H, I), bias = b_ih + b_hh; whh (H, H) (clockwork: already masked).

    The input projection of all steps is one GEMM whose (T, B, H) result becomes the output
    sequence in place: h_t = phi(P_t + h_{t-1} W_hh^T) (no copies).
    """
    T, B = inp.shape[0], inp.shape[1]
    H = whh.shape[0]
    Hout = torch.empty(T, B, H, device=inp.device, dtype=inp.dtype)  # not a view: it is returned
    torch.addmm(bias, inp.reshape(T * B, -1), wih.t(), out=Hout.view(T * B, H))
    whh_t = whh.t()
    if native.fused_loops_for(Hout):  # the loop in C++, the recurrent GEMM fused with the step (see csrc/pointwise.cpp)
        native.elman_forward_loop(Hout, whh_t, h0, units or [], bs or [], relu)
        return Hout
    h_prev = h0
    for t in range(T):
        b = B if bs is None else bs[t]
        hp = h_prev[:b]
        if b < B:
            Hout[t, b:].zero_()  # past a sequence's end the output is zero
        h = Hout[t, :b]
        if units is None:
            h.addmm_(hp, whh_t)
            h.relu_() if relu else tanh_(h)
        else:
            u = units[t]
            tanh_(h[:, :u].addmm_(hp, whh_t[:, :u]))
            if u < H:  # modules that do not tick keep their state
                h[:, u:].copy_(hp[:, u:])
        h_prev = Hout[t]
    return Hout


def _backward_steps(DH, dh0, Hout, whh, bs, units, relu):
    """The backward step loop with torch ops (CUDA, bfloat16/half, or CPU without the C++ kernels):
    DH (T, B, H) is overwritten with the pre-activation gradients, dh0 receives h_0's gradient."""
    T, B, H = Hout.shape
    dev, dt = Hout.device, Hout.dtype
    t1 = torch.empty(B, H, device=dev, dtype=dt)
    for t, b, b1 in backward_step_rows(DH, bs):  # rows past their end: the output's gradient does not count
        dh = DH[t, :b]
        h = Hout[t, :b]
        u = H if units is None else units[t]
        if b1:
            u1 = H if units is None else units[t + 1]
            dh[:b1].addmm_(DH[t + 1, :b1, :u1], whh[:u1])
        dprev = dh0[:b] if t == 0 else None
        if u < H:  # clockwork: units that did not tick pass their gradient through
            tgt = dh0[:b] if t == 0 else DH[t - 1, :b]
            tgt[:, u:].add_(dh[:, u:])
            dh[:, u:].zero_()
        du, hu = dh[:, :u], h[:, :u]
        if relu:
            du.mul_(hu > 0)
        else:
            torch.mul(hu, hu, out=t1[:b, :u])
            du.addcmul_(du, t1[:b, :u], value=-1)
        if dprev is not None:
            dprev.addmm_(du, whh[:u])


class ElmanSequence(torch.autograd.Function):
    """Elman / clockwork recurrence over a whole sequence; hand-written backward.

    ``units``: per-step number of ticking units (clockwork), None for Elman.
    ``periods``/``module_size``: clockwork's, for the weight gradient.
    """

    @staticmethod
    def forward(ctx, bs, lengths, relu, units, periods, module_size, inp, wih, bias, whh, h0):
        Hout = elman_forward(bs, inp, wih, bias, whh, h0, relu, units)
        ctx.bs, ctx.lengths, ctx.relu, ctx.units = bs, lengths, relu, units
        ctx.periods, ctx.module_size = periods, module_size
        ctx.save_for_backward(inp, wih, whh, h0, Hout)
        return Hout, _finals(Hout, lengths)

    @staticmethod
    @first_order_only
    def backward(ctx, dout, dhT):
        inp, wih, whh, h0, Hout = ctx.saved_tensors
        bs, lengths, relu, units = ctx.bs, ctx.lengths, ctx.relu, ctx.units
        T, B, H = Hout.shape
        dev, dt = Hout.device, Hout.dtype
        DH = _dh_buffer(dout, dhT, lengths, T, B, H, dev, dt)  # -> overwritten with d(pre-activation)
        dh0 = torch.zeros(B, H, device=dev, dtype=dt)
        if native.fused_loops_for(DH):  # the step loop in C++; then dh0 += da_0 W_hh (the units that ticked at t = 0)
            native.elman_backward_loop(DH, dh0, Hout, whh, units or [], bs or [], relu)
            b0, u0 = B if bs is None else bs[0], H if units is None else units[0]
            dh0[:b0].addmm_(DH[0, :b0, :u0], whh[:u0])
        else:
            _backward_steps(DH, dh0, Hout, whh, bs, units, relu)
        dP = DH
        if units is None:
            dwhh = torch.mm(dP[0].t(), h0)
            if T > 1:
                dwhh.addmm_(dP[1:].reshape(-1, H).t(), Hout[:-1].reshape(-1, H))
        else:
            # module k ticks at t = 0, T_k, 2 T_k, ...: its rows use only those steps
            dwhh = torch.zeros_like(whh)
            Hprev = torch.cat([h0.unsqueeze(0), Hout[:-1]], 0)  # (T, B, H)
            s = ctx.module_size
            for k, p in enumerate(ctx.periods):
                rows = slice(k * s, (k + 1) * s)
                dwhh[rows] = torch.tensordot(dP[::p, :, rows], Hprev[::p], dims=([0, 1], [0, 1]))
        dP2 = dP.view(T * B, H)
        dinp = torch.mm(dP2, wih).view(inp.shape) if ctx.needs_input_grad[6] else None
        dwih = torch.mm(dP2.t(), inp.reshape(T * B, -1)) if ctx.needs_input_grad[7] else None
        dbias = dP2.sum(0) if ctx.needs_input_grad[8] else None
        return None, None, None, None, None, None, dinp, dwih, dbias, dwhh, dh0
