"""Whole-sequence kernels for the GRU family (``gru``, ``gru_cho``, ``mut1-3``).

Same scheme as :mod:`.lstm`: the caller makes the input projection of all
steps (one GEMM), the kernel runs the recurrence with preallocated buffers and
a hand-written backward that overwrites the saved activations with the
pre-activation gradients and computes the recurrent weight gradients with one
GEMM per matrix after the loop; padded batches are length-sorted and each
step works on its leading ``batch_sizes[t]`` rows. Equations: see
:mod:`recur_attn.cells.gru`.

Two kernels:

* :class:`GRUAfterSequence` -- nn.GRU's form (reset after the matmul): one
  fused 3H recurrent GEMM per step, ``gh = W_hh h + b_hh``;
* :class:`GRUBeforeSequence` -- reset before the matmul (``gru_cho``, MUT1-3):
  per step a GEMM for the gates that read h (r, and z for gru_cho/MUT2; z
  reads tanh(h) in MUT3 and nothing in MUT1), then one H x H GEMM on r * h.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from . import native
from .common import dh_buffer as _dh_buffer
from .common import final_states as _finals
from .common import backward_step_rows, chunk_steps, first_order_only, stash, take, tanh_, tanh_out


# ============================================================ nn.GRU's form
def gru_after_forward(bs, inp, wih, bias, whh, bhn, h0, save: bool):
    """inp (T, B, I); wih (3H, I); bias = b_ih + [b_hr, b_hz, 0]; whh (3H, H); bhn = b_hn (H,).

    The input projection of all steps is one GEMM whose rows become the gate activations in
    place; gh = W_hh h (+ b_hn on its n block) per step as nn.GRU. With ``save``, GN (T, B, H) keeps
    gh_n + b_hn for the backward (which overwrites it with da_n r, W_hn's gradient rows; W_hr's and
    W_hz's are A's, da_r and da_z).
    """
    T, B = inp.shape[0], inp.shape[1]
    H3 = whh.shape[0]
    H = H3 // 3
    dev, dt = inp.device, inp.dtype
    alloc = torch.zeros if bs is not None else torch.empty
    P = torch.addmm(bias, inp.reshape(T * B, -1), wih.t())  # (T*B, 3H)
    A = P.view(T, B, H3)
    Hout = alloc(T, B, H, device=dev, dtype=dt)
    GN = alloc(T, B, H, device=dev, dtype=dt) if save else None
    whh_t = whh.t()
    if native.fused_loops_for(inp):  # the loop in C++, its GEMM fused with the step (CPU, float32/float64)
        native.gru_after_forward_loop(A, GN, whh_t, bhn, Hout, h0, bs or [])
        return {"P": P, "GN": GN, "H": Hout, "h0": h0}
    GH = torch.empty(B, H3, device=dev, dtype=dt)
    h_prev = h0
    for t in range(T):
        b = B if bs is None else bs[t]
        a = A[t, :b]
        gh = GH[:b]
        hp = h_prev[:b]
        torch.mm(hp, whh_t, out=gh)  # (b, 3H)
        ghn = gh[:, 2 * H:].add_(bhn)
        if save:
            GN[t, :b] = ghn
        a[:, :2 * H].add_(gh[:, :2 * H]).sigmoid_()  # r, z
        n = a[:, 2 * H:]
        tanh_(n.addcmul_(a[:, :H], ghn))
        h = Hout[t, :b]
        torch.sub(hp, n, out=h)
        h.mul_(a[:, H:2 * H]).add_(n)  # h = n + z (h_prev - n)
        h_prev = Hout[t]
    return {"P": P, "GN": GN, "H": Hout, "h0": h0}


class GRUAfterSequence(torch.autograd.Function):
    """nn.GRU's recurrence over a whole sequence; hand-written backward."""

    @staticmethod
    def forward(ctx, bs, lengths, inp, wih, bias, whh, bhn, h0):
        res = gru_after_forward(bs, inp, wih, bias, whh, bhn, h0, save=True)
        ctx.bs, ctx.lengths = bs, lengths
        stash(ctx, res)
        ctx.save_for_backward(inp, wih, whh)
        return res["H"], _finals(res["H"], lengths)

    @staticmethod
    @first_order_only
    def backward(ctx, dout, dhT):
        inp, wih, whh = ctx.saved_tensors
        bs, lengths, bufs = ctx.bs, ctx.lengths, take(ctx, "GRU")
        GN, Hout, h0 = bufs["GN"], bufs["H"], bufs["h0"]
        T, B, H = GN.shape
        H3 = 3 * H
        A = bufs["P"].view(T, B, H3)
        dev, dt = A.device, A.dtype
        DH = _dh_buffer(dout, dhT, lengths, T, B, H, dev, dt)
        dh0 = torch.zeros(B, H, device=dev, dtype=dt)
        if native.fused_loops_for(A):  # the same loop in C++ (CPU, float32/float64)
            native.gru_after_backward_loop(A, GN, DH, dh0, Hout, h0.contiguous(), whh, bs or [])
        else:
            _after_backward_steps(bs, A, GN, DH, dh0, Hout, h0, whh)
        # W_hh's gradient rows: [da_r, da_z] (A's first 2H columns) and da_n r (GN), against h_prev
        w_rz, w_n = whh[:2 * H], whh[2 * H:]
        dh0.addmm_(A[0, :, :2 * H], w_rz).addmm_(GN[0], w_n)
        dwhh = torch.empty_like(whh)
        torch.mm(A[0, :, :2 * H].t(), h0, out=dwhh[:2 * H])
        torch.mm(GN[0].t(), h0, out=dwhh[2 * H:])
        if T > 1:
            hprev = Hout[:-1].reshape(-1, H)
            dwhh[:2 * H].addmm_(A[1:].reshape(-1, H3)[:, :2 * H].t(), hprev)
            dwhh[2 * H:].addmm_(GN[1:].reshape(-1, H).t(), hprev)
        dbhn = GN.sum((0, 1))
        dP = A.view(T * B, H3)
        dinp = torch.mm(dP, wih).view(inp.shape) if ctx.needs_input_grad[2] else None
        dwih = torch.mm(dP.t(), inp.reshape(T * B, -1)) if ctx.needs_input_grad[3] else None
        dbias = dP.sum(0) if ctx.needs_input_grad[4] else None
        return None, None, dinp, dwih, dbias, dwhh, dbhn, dh0


def _after_backward_steps(bs, A, GN, DH, dh0, Hout, h0, whh):
    """The backward step loop of GRUAfterSequence with torch ops (CUDA, other dtypes, or CPU without the C++
    kernels): A becomes the pre-activation gradients [da_r, da_z, da_n], GN (gh_n + b_hn in) da_n r,
    DH[t-1] and dh0 receive the gradients that reach h_{t-1}."""
    B, H3 = A.shape[1], A.shape[2]
    H = H3 // 3
    dev, dt = A.device, A.dtype
    w_rz, w_n = whh[:2 * H], whh[2 * H:]
    t1 = torch.empty(B, H, device=dev, dtype=dt)
    t2 = torch.empty(B, H, device=dev, dtype=dt)
    for t, b, b1 in backward_step_rows(A, bs):
        dh = DH[t, :b]
        if b1:  # + dgh_{t+1} W_hh, dgh = [da_r, da_z, da_n r]
            dh[:b1].addmm_(A[t + 1, :b1, :2 * H], w_rz).addmm_(GN[t + 1, :b1], w_n)
        a, gn = A[t, :b], GN[t, :b]
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        hp = h0[:b] if t == 0 else Hout[t - 1, :b]
        dprev = dh0[:b] if t == 0 else DH[t - 1, :b]
        # h = n + z (h_prev - n): direct path to h_prev is dh * z
        dz = torch.sub(hp, n, out=t1[:b]).mul_(dh)
        dprev.addcmul_(dh, z)
        dn = dh.sub_(dh * z)  # dh (1 - z)
        # da_n = dn (1 - n^2), over n
        torch.mul(n, n, out=t2[:b])
        torch.addcmul(dn, dn, t2[:b], value=-1, out=n)
        # dr = da_n gh_n; dgh_n = da_n r (into GN, whose gh_n is then read)
        torch.mul(n, gn, out=t2[:b])
        torch.mul(n, r, out=gn)
        rz = a[:, :2 * H]
        torch.addcmul(rz, rz, rz, value=-1, out=rz)  # r (1 - r), z (1 - z)
        r.mul_(t2[:b])
        z.mul_(dz)


# ============================================================ reset before the matmul
@dataclass(frozen=True)
class GRUBeforeConfig:
    H: int
    z_from: str  # "h" (gru_cho, mut2), "tanh_h" (mut3), "none" (mut1)
    keep_z: bool  # True: h = n + z (h_prev - n) (GRU); False: h = h_prev + z (n - h_prev) (MUT)
    # MUT1 with a projected x (I != H): xw's n block is W_n x + b_ih_n, and GRUBeforeSequence forms its
    # tanh(.) + b_hh_n itself (in place, its tanh kept for the backward), where autograd would copy the whole
    # (T*B, 3H) projection twice and zero-fill it twice a backward for an in-place write into a view of it
    tanh_n: bool = False


@dataclass(frozen=True)
class GRUBeforeProjection:
    """The input projection of the reset-before family in the kernel's [r, z, n] order, every bias folded in.

    ``weight`` (k*H, I) and ``bias`` (k*H,): the blocks that are linear in x, in [r, z, n] order, so
    that they come out of one GEMM (``addmm``, no split, concatenation or second bias pass over a
    (T*B, 3H) tensor). MUT1 and MUT2 feed one block with x itself (``identity``: "n" through tanh in
    MUT1, "r" in MUT2), projected to H units when I != H (then linear too, and MUT1's tanh acts on
    it in place, before its ``post_bias``, b_hh of that block).
    """

    H: int
    weight: Tensor
    bias: Tensor
    identity: str | None = None  # the block fed by x (None: every block comes out of the GEMM)
    projected: bool = True  # the identity block is a projection of x (I != H)
    tanh_identity: bool = False  # MUT1: the identity block goes through tanh
    post_bias: Tensor | None = None  # b_hh of the identity block, added after the tanh

    def to(self, dtype: torch.dtype) -> GRUBeforeProjection:
        """This projection with its tensors in ``dtype`` (autocast's, for the recurrence)."""
        def cast(t: Tensor | None) -> Tensor | None:
            return t if t is None or t.dtype == dtype else t.to(dtype)

        return replace(self, weight=cast(self.weight), bias=cast(self.bias), post_bias=cast(self.post_bias))

    @property
    def tanh_in_kernel(self) -> bool:
        """MUT1 with a projected x: the training kernel applies the n block's tanh and b_hh_n itself
        (GRUBeforeConfig.tanh_n), so that the projection it gets (``linear``) is a plain GEMM."""
        return self.tanh_identity and self.projected

    def linear(self, x: Tensor) -> Tensor:
        """x (N, I) -> (N, 3H): the projection's GEMM alone, a fresh tensor (``tanh_in_kernel``'s input)."""
        return torch.addmm(self.bias, x, self.weight.t())

    def __call__(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """x (N, I) -> (N, 3H), a fresh tensor (the kernel works in it in place). ``out``: a (N, 3H)
        buffer to fill (inference only: in-place ops). With ``tanh_in_kernel`` and autograd recording, use
        ``linear`` and GRUBeforeConfig.tanh_n instead (a ValueError here)."""
        H = self.H
        if self.identity is None or self.projected:
            if out is None and self.tanh_identity and torch.is_grad_enabled():
                raise ValueError("GRUBeforeProjection: MUT1's projected n block under autograd goes through "
                                 "linear() and GRUBeforeConfig.tanh_n (the kernel applies its tanh)")
            P = torch.addmm(self.bias, x, self.weight.t(), out=out) if out is not None else \
                torch.addmm(self.bias, x, self.weight.t())
            if self.tanh_identity:  # MUT1's n = tanh(W_n x + b_ih_n) + b_hh_n (no autograd here)
                P[..., 2 * H:].tanh_().add_(self.post_bias)
            return P
        lin = torch.addmm(self.bias, x, self.weight.t())  # the two linear blocks
        ident = (torch.tanh(x) if self.tanh_identity else x) + self.post_bias
        parts = [ident, lin] if self.identity == "r" else [lin, ident]  # MUT2: r; MUT1: n
        return torch.cat(parts, dim=-1) if out is None else torch.cat(parts, dim=-1, out=out)


def gru_before_forward(cfg: GRUBeforeConfig, bs, xw, w1, wz, wn, h0, save: bool, out: Tensor | None = None):
    """xw (T, B, 3H) [r, z, n] with every bias folded in. w1 (H or 2H, H): the recurrent rows of r
    (and z when z_from == "h"); wz (H, H) for z_from == "tanh_h"; wn (H, H) acting on r * h.
    ``out``: a (T, B, H) buffer for the outputs (zeros past each row's end when bs is given)."""
    T, B, H3 = xw.shape
    H = cfg.H
    dev, dt = xw.device, xw.dtype
    alloc = torch.zeros if bs is not None else torch.empty
    A = xw  # the kernel owns xw (a fresh tensor): its rows become the gates in place, no copies
    RH = alloc(T, B, H, device=dev, dtype=dt) if save else torch.empty(B, H, device=dev, dtype=dt)
    TH = None
    if cfg.z_from == "tanh_h":
        TH = alloc(T, B, H, device=dev, dtype=dt) if save else torch.empty(B, H, device=dev, dtype=dt)
    Hout = alloc(T, B, H, device=dev, dtype=dt) if out is None else out
    w1_t, wn_t = w1.t(), wn.t()
    wz_t = None if wz is None else wz.t()
    k1 = w1.shape[0]  # H or 2H
    if native.enabled_for(xw):  # the same loop in C++ (CPU)
        native.gru_before_forward_loop(A, w1_t, wz_t, wn_t, RH, save, TH, Hout, h0, bs or [], cfg.keep_z)
        return {"A": A, "RH": RH, "TH": TH, "H": Hout, "h0": h0}
    h_prev = h0
    for t in range(T):
        b = B if bs is None else bs[t]
        a = A[t, :b]
        hp = h_prev[:b]
        a[:, :k1].addmm_(hp, w1_t)
        if cfg.z_from == "tanh_h":
            th = TH[t, :b] if save else TH[:b]
            tanh_out(hp, th)
            a[:, H:2 * H].addmm_(th, wz_t)
        a[:, :2 * H].sigmoid_()
        rh = RH[t, :b] if save else RH[:b]
        torch.mul(a[:, :H], hp, out=rh)
        n = a[:, 2 * H:]
        tanh_(n.addmm_(rh, wn_t))
        h = Hout[t, :b]
        z = a[:, H:2 * H]
        if cfg.keep_z:
            torch.sub(hp, n, out=h)
            h.mul_(z).add_(n)
        else:
            torch.sub(n, hp, out=h)
            h.mul_(z).add_(hp)
        h_prev = Hout[t]
    return {"A": A, "RH": RH, "TH": TH, "H": Hout, "h0": h0}


def gru_before_infer(cfg: GRUBeforeConfig, bs, project: GRUBeforeProjection, inp, w1, wz, wn, h0) -> Tensor:
    """The no-grad forward: the input projection runs in chunks of steps into one reused buffer (a whole
    (T*B, 3H) projection costs page faults on every call that are a sizeable part of an inference pass
    on CPU), each chunk's steps right after it. inp (T, B, I) -> outputs (T, B, H)."""
    T, B = inp.shape[0], inp.shape[1]
    H = cfg.H
    dev, dt = inp.device, inp.dtype
    tc = chunk_steps(T, B, 3 * H)
    x2 = inp.reshape(T * B, -1)
    Hout = (torch.zeros if bs is not None else torch.empty)(T, B, H, device=dev, dtype=dt)
    buf = torch.empty(tc * B, 3 * H, device=dev, dtype=dt)
    h_prev = h0
    for t0 in range(0, T, tc):
        n = min(tc, T - t0)
        xw = project(x2[t0 * B:(t0 + n) * B], out=buf[:n * B]).view(n, B, 3 * H)
        gru_before_forward(cfg, None if bs is None else bs[t0:t0 + n], xw, w1, wz, wn, h_prev, save=False,
                           out=Hout[t0:t0 + n])
        h_prev = Hout[t0 + n - 1]
    return Hout


class GRUBeforeSequence(torch.autograd.Function):
    """gru_cho / MUT1-3 recurrence over a whole sequence; hand-written backward."""

    @staticmethod
    def forward(ctx, cfg, bs, lengths, xw, w1, wz, wn, h0, post=None):
        # xw (T, B, 3H), or (T*B, 3H) with h0 (B, H): the (fresh) input projection, which autograd does not
        # let a Function returning several tensors modify in place when it is a view. post: b_hh_n with
        # cfg.tanh_n (MUT1, projected x), whose xw n block is then tanh'ed and biased here
        TN = None
        if cfg.tanh_n:
            xn = xw.view(-1, xw.shape[-1])[:, 2 * cfg.H:]
            TN = torch.tanh(xn)  # (T*B, H), kept for the backward
            torch.add(TN, post, out=xn)
        res = gru_before_forward(cfg, bs, xw.view(-1, h0.shape[0], xw.shape[-1]), w1, wz, wn, h0, save=True)
        ctx.cfg, ctx.bs, ctx.lengths = cfg, bs, lengths
        res["TN"] = TN
        stash(ctx, res)
        ctx.save_for_backward(w1, wz, wn)
        ctx.mark_dirty(xw)  # used in place as the gate buffer; returned last (callers drop it)
        ctx.set_materialize_grads(False)  # (else autograd zero-fills a (T*B, 3H) gradient for that last output)
        ctx.xw_shape = xw.shape
        return res["H"], _finals(res["H"], lengths), xw

    @staticmethod
    @first_order_only
    def backward(ctx, dout, dhT, _dxw_out):
        w1, wz, wn = ctx.saved_tensors
        cfg, bs, lengths, bufs = ctx.cfg, ctx.bs, ctx.lengths, take(ctx, "GRU")
        A, RH, TH, Hout, h0 = bufs["A"], bufs["RH"], bufs["TH"], bufs["H"], bufs["h0"]
        T, B, H3 = A.shape
        H = cfg.H
        k1 = w1.shape[0]
        dev, dt = A.device, A.dtype
        DH = _dh_buffer(dout, dhT, lengths, T, B, H, dev, dt)
        dh0 = torch.zeros(B, H, device=dev, dtype=dt)
        if native.enabled_for(A):  # the same loop in C++ (CPU)
            native.gru_before_backward_loop(A, DH, dh0, Hout, h0.contiguous(), w1, wz, TH, wn, bs or [],
                                            cfg.keep_z)
        else:
            _before_backward_steps(cfg, bs, A, DH, dh0, Hout, h0, w1, wz, TH, wn)
        dh0.addmm_(A[0, :, :k1], w1)
        if cfg.z_from == "tanh_h":
            g = torch.mm(A[0, :, H:2 * H], wz)
            th = torch.tanh(h0)
            dh0.add_(g).addcmul_(g * th, th, value=-1)
        dxw = A
        flatA = A.reshape(-1, H3)
        dw1 = torch.mm(A[0, :, :k1].t(), h0)  # h_prev: h0, then the outputs (no concatenated copy)
        if T > 1:
            dw1.addmm_(A[1:].reshape(-1, H3)[:, :k1].t(), Hout[:-1].reshape(-1, H))
        dwz = None
        if cfg.z_from == "tanh_h":
            dwz = torch.mm(flatA[:, H:2 * H].t(), TH.reshape(-1, H))
        dwn = torch.mm(flatA[:, 2 * H:].t(), RH.reshape(-1, H))
        dpost = None
        if cfg.tanh_n:  # n's input was tanh(xw_n) + b_hh_n: d/db_hh_n = da_n, d/dxw_n = da_n (1 - tanh^2)
            da_n = flatA[:, 2 * H:]
            dpost = da_n.sum(0)
            TN = bufs["TN"]
            da_n.mul_(TN.mul_(TN).neg_().add_(1))
        return None, None, None, dxw.view(ctx.xw_shape), dw1, dwz, dwn, dh0, dpost


def _before_backward_steps(cfg, bs, A, DH, dh0, Hout, h0, w1, wz, TH, wn):
    """The backward step loop of GRUBeforeSequence with torch ops (CUDA, or CPU without the C++ kernels): A
    becomes the pre-activation gradients, DH[t-1] and dh0 receive the gradients that reach h_{t-1}."""
    B = A.shape[1]
    H = cfg.H
    k1 = w1.shape[0]
    dev, dt = A.device, A.dtype
    t1 = torch.empty(B, H, device=dev, dtype=dt)
    t2 = torch.empty(B, H, device=dev, dtype=dt)
    for t, b, b1 in backward_step_rows(A, bs):
        dh = DH[t, :b]
        if b1:
            dh[:b1].addmm_(A[t + 1, :b1, :k1], w1)
            if cfg.z_from == "tanh_h":
                # z_{t+1} reads tanh(h_t): d/dh = (da_z W_hz) (1 - tanh(h_t)^2)
                th = TH[t + 1, :b1]
                g = torch.mm(A[t + 1, :b1, H:2 * H], wz, out=t2[:b1])
                dh[:b1].add_(g)
                g.mul_(th)
                dh[:b1].addcmul_(g, th, value=-1)
        a = A[t, :b]
        r, z, n = a[:, :H], a[:, H:2 * H], a[:, 2 * H:]
        hp = h0[:b] if t == 0 else Hout[t - 1, :b]
        dprev = dh0[:b] if t == 0 else DH[t - 1, :b]
        if cfg.keep_z:  # h = n + z (h_prev - n)
            dz = torch.sub(hp, n, out=t1[:b]).mul_(dh)
            dprev.addcmul_(dh, z)
            dn = dh.sub_(dh * z)
        else:  # h = h_prev + z (n - h_prev)
            dz = torch.sub(n, hp, out=t1[:b]).mul_(dh)
            dprev.add_(dh).addcmul_(dh, z, value=-1)
            dn = dh.mul_(z)
        torch.mul(n, n, out=t2[:b])
        torch.addcmul(dn, dn, t2[:b], value=-1, out=n)  # da_n
        drh = torch.mm(n, wn, out=t2[:b])  # d(r * h_prev)
        dprev.addcmul_(drh, r)
        rz = a[:, :2 * H]
        torch.addcmul(rz, rz, rz, value=-1, out=rz)
        r.mul_(drh).mul_(hp)
        z.mul_(dz)
