"""Clockwork RNN (Koutnik, Greff, Gomez & Schmidhuber 2014, "A Clockwork RNN").

The hidden layer is split into M modules of H/M units with periods T_k
(default T_k = 2^k, k = 0..M-1; module 0 is the fastest). At step t
(counted from 0, so every module runs at the first step)::

    a_t      = W_H' h_{t-1} + W_I x_t + b       (W_H' = W_H * mask)
    h_t^(k)  = tanh(a_t^(k))    if t mod T_k == 0
    h_t^(k)  = h_{t-1}^(k)      otherwise

W_H is block upper triangular: module k reads the modules j >= k, those of
equal or longer period -- slow modules feed fast ones, never the reverse.
Parameters as nn.RNN (weight_ih (H, I), weight_hh (H, H), bias_ih, bias_hh);
the entries of weight_hh below the block diagonal are held at zero by the
mask (they receive no gradient and start at zero).
"""

from __future__ import annotations

import torch
from torch.nn.functional import linear

from .base import RecurrentCell


class ClockworkCell(RecurrentCell):
    """Clockwork RNN cell; see the module docstring for the equations."""

    state_names = ("h",)
    gate_names = ("tick",)
    name = "clockwork"

    def __init__(self, input_size: int, hidden_size: int, num_modules: int = 4,
                 periods: list[int] | None = None, forget_bias: float | None = None) -> None:
        super().__init__(input_size, hidden_size, forget_bias)
        if periods is None:
            if isinstance(num_modules, bool) or not isinstance(num_modules, int) or num_modules <= 0:
                raise ValueError(f"num_modules must be a positive integer, got {num_modules!r}")
            periods = [2 ** k for k in range(num_modules)]
        periods = [int(p) for p in periods]
        if any(p <= 0 for p in periods) or periods != sorted(periods):
            raise ValueError(f"clockwork periods must be positive and increasing, got {periods}")
        if hidden_size % len(periods):
            raise ValueError(
                f"clockwork: hidden_size={hidden_size} must be divisible by the number of modules ({len(periods)})"
            )
        self.periods = tuple(periods)
        self.num_modules = len(periods)
        self.module_size = hidden_size // self.num_modules
        k = torch.arange(hidden_size) // self.module_size  # module of each unit
        self.register_buffer("hh_mask", (k[None, :] >= k[:, None]).float(), persistent=False)  # (H, H)
        self.register_buffer("unit_period", torch.tensor(self.periods)[k], persistent=False)  # (H,)
        self._register_params()

    def param_shapes(self):
        H, I = self.hidden_size, self.input_size
        return {"weight_ih": (H, I), "weight_hh": (H, H), "bias_ih": (H,), "bias_hh": (H,)}

    @torch.no_grad()
    def init_params(self, p):
        super().init_params(p)
        p["weight_hh"].mul_(self.hh_mask.to(p["weight_hh"].device))

    def active_modules(self, t: int) -> list[int]:
        return [k for k, period in enumerate(self.periods) if t % period == 0]

    def step(self, p, xw, state, t, below=None, record=None):
        h = state[0]
        mask = self.hh_mask.to(dtype=h.dtype)
        h_new = torch.tanh(xw + linear(h, p["weight_hh"] * mask, p["bias_hh"]))  # (B, H)
        tick = (t % self.unit_period) == 0  # (H,)
        h_new = torch.where(tick, h_new, h)
        if record is not None:
            record["tick"] = tick.to(h.dtype).expand_as(h)
        return h_new, (h_new,)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, periods={self.periods}"
