"""Helpers shared by the fused kernels."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import Tensor

_KEEP_BUFFERS = [0]

#: elements of the chunked input-projection buffer of an inference pass (4 MB of floats): a whole
#: (T*B, G*H) buffer costs page faults on every call that are a sizeable part of an inference pass on CPU
CHUNK_ELEMS = 1 << 20


def chunk_steps(T: int, B: int, width: int) -> int:
    """Steps per chunk of an inference pass's input projection ((chunk*B, width) elements, at least one step)."""
    return max(1, min(T, CHUNK_ELEMS // max(1, B * width)))


def first_order_only(backward):
    """The kernels' hand-written backward passes are not differentiable themselves: under
    ``create_graph=True`` (a double backward: gradient penalties, Hessian-vector products) say so instead
    of returning gradients that carry no graph (``once_differentiable`` raises only where the incoming
    gradients require grad, and even then second derivatives with respect to the weights came out
    missing). Autograd runs a backward pass in grad mode exactly when ``create_graph`` is set."""

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "Recurrent: the fused kernels (impl='fused', or 'auto', which runs them) have a first-order "
                "backward pass only, and this backward asked for a graph of it (create_graph=True: a double "
                "backward). Use impl='reference' (or impl='torch' for the cells torch implements) for "
                "second derivatives.")
        return backward(ctx, *grads)

    return wrapper


@contextlib.contextmanager
def reusable_backward() -> Iterator[None]:
    """Let the backward of kernels run inside this block run more than once.

    The kernels' backward passes overwrite the saved gate activations with the
    gradients (it saves a (T, B, G*H) buffer). Forwards run inside this block
    instead give each backward call its own copy, so that ``retain_graph=True``
    and ``torch.autograd.gradcheck`` work, at the cost of that copy.
    """
    _KEEP_BUFFERS[0] += 1
    try:
        yield
    finally:
        _KEEP_BUFFERS[0] -= 1


def stash(ctx, bufs: dict) -> None:
    """Keep the forward's buffers on ctx for the backward pass."""
    ctx.bufs, ctx.keep, ctx.done = bufs, _KEEP_BUFFERS[0] > 0, False


def take(ctx, kernel: str) -> dict:
    """The buffers for this backward call (a copy when they must survive it)."""
    if ctx.done:
        raise RuntimeError(
            f"the fused {kernel} kernel's backward overwrites its buffers and runs only once; for "
            "retain_graph=True or gradcheck, run the forward inside recur_attn.layers.fast.reusable_backward()")
    if ctx.keep:
        return {k: (v.clone() if isinstance(v, Tensor) else v) for k, v in ctx.bufs.items()}
    ctx.done = True
    bufs = ctx.bufs
    del ctx.bufs
    return bufs


# tanh through the logistic function: tanh(x) = 2 sigmoid(2x) - 1. On CPU torch's
# sigmoid is vectorised and several times faster than its tanh (measured here:
# 270 us against 95 us for 64 x 256 floats, the three ops of tanh_out included);
# the identity is exact up to rounding (absolute error of an ulp of 1). On other
# devices the kernels call torch.tanh.
_MINUS_ONE: dict = {}


def _minus_one(x: Tensor) -> Tensor:
    key = (x.dtype, x.device)
    if key not in _MINUS_ONE:
        import torch

        _MINUS_ONE[key] = torch.tensor(-1.0, dtype=x.dtype, device=x.device)
    return _MINUS_ONE[key]


def sigmoid_tanh(x: Tensor) -> bool:
    """Whether the kernels compute tanh through sigmoid for tensors like x."""
    return x.device.type == "cpu"


def from_sigmoid_(s: Tensor) -> Tensor:
    """s = sigmoid(2x) in place -> tanh(x) = 2 s - 1."""
    import torch

    return torch.add(_minus_one(s), s, alpha=2, out=s)


def tanh_out(x: Tensor, out: Tensor) -> Tensor:
    import torch

    if not sigmoid_tanh(x):
        return torch.tanh(x, out=out)
    torch.add(x, x, out=out).sigmoid_()
    return from_sigmoid_(out)


def tanh_(x: Tensor) -> Tensor:
    if not sigmoid_tanh(x):
        return x.tanh_()
    x.add_(x).sigmoid_()
    return from_sigmoid_(x)


def final_states(Hout: Tensor, lengths: Tensor | None) -> Tensor:
    """The state at each sequence's true end: Hout (T, B, H) -> (B, H)."""
    T = Hout.shape[0]
    if lengths is None:
        return Hout[T - 1].clone()
    idx = lengths.to(Hout.device) - 1
    return Hout[idx, torch.arange(Hout.shape[1], device=Hout.device)]


def backward_step_rows(buf: Tensor, bs: list[int] | None):
    """(t, b, b1) for t = T-1 .. 0 of a backward step loop: the rows alive at step t and at step t+1 (0 at
    the last step). buf[t]'s rows past their end are zeroed first: they get no gradient (the torch-op
    loops' gate buffers hold the input projections there, DH the outputs' zero gradients)."""
    T, B = buf.shape[0], buf.shape[1]
    for t in range(T - 1, -1, -1):
        b = B if bs is None else bs[t]
        b1 = 0 if t == T - 1 else (B if bs is None else bs[t + 1])
        if b < B:
            buf[t, b:].zero_()
        yield t, b, b1


def dh_buffer(dout, dhT, lengths, T, B, H, dev, dt):
    """dh of every step (T, B, H), contiguous: the output's gradient plus the final state's
    gradient at each sequence's true end. A fresh buffer the backward may overwrite."""
    DH = torch.zeros(T, B, H, device=dev, dtype=dt) if dout is None else dout.clone(memory_format=torch.contiguous_format)
    if dhT is not None:
        if lengths is None:
            DH[T - 1] += dhT
        else:
            DH.index_put_((lengths.to(dev) - 1, torch.arange(B, device=dev)), dhT, accumulate=True)
    return DH


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of a time-major padded batch within its own length.

    x (T, B, ...) -> (T, B, ...); positions past a sequence's length stay in place.
    """
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]  # (T, 1)
    L = lengths.to(x.device)[None, :]  # (1, B)
    idx = torch.where(t < L, L - 1 - t, t)  # (T, B)
    idx = idx.reshape(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, idx)
