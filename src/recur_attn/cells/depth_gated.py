"""Depth-gated LSTM (Yao, Cohn, Vylomova, Duh & Dyer 2015, "Depth-Gated LSTM").

Each layer L > 1 is an LSTM (nn.LSTM's equations) whose memory cell also
receives the memory cell of the layer below at the same step, through a
depth gate::

    i_t = sigma(W_xi x_t + W_hi h_{t-1} + b_i)
    f_t = sigma(W_xf x_t + W_hf h_{t-1} + b_f)
    g_t = tanh(W_xg x_t + W_hg h_{t-1} + b_g)
    o_t = sigma(W_xo x_t + W_ho h_{t-1} + b_o)
    d_t = sigma(W_xd x_t + w_cd * c_{t-1} + w_ld * c_t^{L-1} + b_d)     depth gate
    c_t = d_t * c_t^{L-1} + f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

x_t is the layer's input (the hidden state of the layer below) and
c_t^{L-1} the lower layer's cell at the same step. Layer 1 has no layer
below: it is a plain LSTM with no depth gate (``has_below=False``).

Layout: weight_ih (5H, I) with blocks i, f, g, o, d (4H without a layer
below), weight_hh (4H, H), bias_ih (5H or 4H), bias_hh (4H); the depth
gate's peephole-like weights are the vectors weight_cd and weight_ld (H,).
"""

from __future__ import annotations

import torch
from torch.nn.functional import linear

from .base import RecurrentCell, set_block


class DepthGatedLSTMCell(RecurrentCell):
    """Depth-gated LSTM cell (Yao et al. 2015); see the module docstring."""

    state_names = ("h", "c")
    depth_gated = True
    name = "dglstm"

    def __init__(self, input_size: int, hidden_size: int, has_below: bool = False,
                 forget_bias: float | None = None) -> None:
        super().__init__(input_size, hidden_size, forget_bias)
        self.has_below = bool(has_below)
        self.gate_names = ("i", "f", "g", "o", "d") if self.has_below else ("i", "f", "g", "o")
        self._register_params()

    def param_shapes(self):
        H, I = self.hidden_size, self.input_size
        G = 5 if self.has_below else 4
        shapes = {"weight_ih": (G * H, I), "weight_hh": (4 * H, H), "bias_ih": (G * H,), "bias_hh": (4 * H,)}
        if self.has_below:
            shapes.update(weight_cd=(H,), weight_ld=(H,))
        return shapes

    def set_forget_bias(self, p, value):
        set_block(p["bias_ih"], 1, self.hidden_size, value)
        set_block(p["bias_hh"], 1, self.hidden_size, 0.0)

    def step(self, p, xw, state, t, below=None, record=None):
        H = self.hidden_size
        h_prev, c_prev = state
        pre = xw[..., : 4 * H] + linear(h_prev, p["weight_hh"], p["bias_hh"])  # (B, 4H)
        a_i, a_f, a_g, a_o = pre.split(H, dim=-1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c = f * c_prev + i * g
        if self.has_below:
            if below is None:
                raise ValueError("dglstm: a layer with a layer below needs that layer's cell state c_t^{L-1}")
            d = torch.sigmoid(xw[..., 4 * H:] + p["weight_cd"] * c_prev + p["weight_ld"] * below)
            c = c + d * below
        h = o * torch.tanh(c)
        if record is not None:
            record.update(i=i, f=f, g=g, o=o)
            if self.has_below:
                record["d"] = d
        return h, (h, c)
