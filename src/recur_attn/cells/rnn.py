"""Elman's simple recurrent network (Elman 1990), as torch.nn.RNN computes it::

    h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   phi = tanh (rnn_tanh) or ReLU (rnn_relu)

Parameters and names as nn.RNN: weight_ih (H, I), weight_hh (H, H), bias_ih, bias_hh (H).
"""

from __future__ import annotations

import torch

from .base import RecurrentCell


class ElmanCell(RecurrentCell):
    """h_t = phi(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh) (Elman 1990); phi tanh or relu."""

    state_names = ("h",)
    gate_names = ()

    def __init__(self, input_size: int, hidden_size: int, nonlinearity: str = "tanh",
                 forget_bias: float | None = None) -> None:
        super().__init__(input_size, hidden_size, forget_bias)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.name = f"rnn_{nonlinearity}"
        self._register_params()

    def param_shapes(self):
        H, I = self.hidden_size, self.input_size
        return {"weight_ih": (H, I), "weight_hh": (H, H), "bias_ih": (H,), "bias_hh": (H,)}

    def step(self, p, xw, state, t, below=None, record=None):
        pre = xw + torch.nn.functional.linear(state[0], p["weight_hh"], p["bias_hh"])  # (B, H)
        h = torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre)
        return h, (h,)
