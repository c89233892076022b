"""Helpers shared by the fused kernels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import Tensor

_KEEP_BUFFERS = [0]


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
