"""Likelihood metrics for density models and language models.

* Polyphonic music (Boulanger-Lewandowski et al. 2012; Chung et al. 2014): each
  frame is 88 independent Bernoulli variables with probabilities
  p = sigmoid(logits); the NLL of a frame is

      nll_t = - sum_k [ y_tk log p_tk + (1 - y_tk) log(1 - p_tk) ]     (nats)

  and the reported number is the mean of nll_t over *all frames of the split*
  (every frame weighs the same, whatever chorale it belongs to): nats per step.
* Characters: bits per character = mean cross-entropy in nats / ln 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LN2 = math.log(2.0)


def frame_mask(lengths: Tensor | None, batch: int, steps: int, device=None) -> Tensor:
    """(B, T) bool, True on the true frames t < lengths[b] (all True when lengths is None)."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    t = torch.arange(steps, device=lengths.device)
    return t[None, :] < lengths[:, None]


def bernoulli_nll_per_frame(logits: Tensor, target: Tensor) -> Tensor:
    """logits, target (..., K) -> the NLL of each frame (...,) in nats, summed over the K units."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(target.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none").sum(-1)


def bits_per_char(nats_per_char: Tensor | float) -> Tensor | float:
    """Mean cross-entropy in nats per character -> bits per character."""
    return nats_per_char / LN2
