"""Gated recurrent units: GRU in two forms, and the MUT1-3 of Jozefowicz et al. (2015).

``gru`` -- torch.nn.GRU's form (reset applied after the recurrent matmul)::

    r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

``gru_cho`` -- Cho et al. (2014), reset applied before the matmul::

    n_t = tanh(W_in x_t + b_in + W_hn (r_t * h_{t-1}) + b_hn)      (r_t, z_t, h_t as above)

``mut1``, ``mut2``, ``mut3`` -- the three architectures found by Jozefowicz,
Zaremba & Sutskever (2015), "An Empirical Exploration of Recurrent Network
Architectures", Sec. 3::

    MUT1: z = sigma(W_xz x + b_z)
          r = sigma(W_xr x + W_hr h + b_r)
          h' = tanh(W_hh (r * h) + tanh(x) + b_h) * z + h * (1 - z)
    MUT2: z = sigma(W_xz x + W_hz h + b_z)
          r = sigma(x + W_hr h + b_r)
          h' = tanh(W_hh (r * h) + W_xh x + b_h) * z + h * (1 - z)
    MUT3: z = sigma(W_xz x + W_hz tanh(h) + b_z)
          r = sigma(W_xr x + W_hr h + b_r)
          h' = tanh(W_hh (r * h) + W_xh x + b_h) * z + h * (1 - z)

MUT1's tanh(x) and MUT2's bare x need x to have H features. When the input
size differs from H (e.g. the first layer on the adding problem), the cell
uses a learned projection there instead (tanh(W_xp x + b_xp), resp.
W_xp x + b_xp): an extra block at the end of ``weight_ih``. With equal sizes
it is the paper's identity and there is no such block.

Layout: fused blocks in nn.GRU's order r, z, n, each cell keeping only the
blocks its equations have. GRU and gru_cho load nn.GRU's state_dict.

``forget_bias`` b initialises the bias of the gate that keeps the old state
so that early training keeps it, as Jozefowicz et al. do for the LSTM's forget
gate: the keep gate is z for GRU (b_iz = b) and 1 - z for MUT1-3 (b_z = -b).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import linear

from .base import RecurrentCell, set_block


class GRUCell(RecurrentCell):
    """GRU (Cho et al. 2014); ``reset_after`` True is nn.GRU's form, False Cho's."""

    state_names = ("h",)
    gate_names = ("r", "z", "n")

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = True,
                 forget_bias: float | None = None) -> None:
        super().__init__(input_size, hidden_size, forget_bias)
        self.reset_after = reset_after
        self.name = "gru" if reset_after else "gru_cho"
        self._register_params()

    def param_shapes(self):
        H, I = self.hidden_size, self.input_size
        return {"weight_ih": (3 * H, I), "weight_hh": (3 * H, H), "bias_ih": (3 * H,), "bias_hh": (3 * H,)}

    def set_forget_bias(self, p, value):
        set_block(p["bias_ih"], 1, self.hidden_size, value)
        set_block(p["bias_hh"], 1, self.hidden_size, 0.0)

    def step(self, p, xw, state, t, below=None, record=None):
        H = self.hidden_size
        h = state[0]
        xr, xz, xn = xw.split(H, dim=-1)
        if self.reset_after:
            hr, hz, hn = linear(h, p["weight_hh"], p["bias_hh"]).split(H, dim=-1)  # each (B, H)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
        else:
            hr, hz = linear(h, p["weight_hh"][: 2 * H], p["bias_hh"][: 2 * H]).split(H, dim=-1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + linear(r * h, p["weight_hh"][2 * H:], p["bias_hh"][2 * H:]))
        h_new = (1.0 - z) * n + z * h
        if record is not None:
            record.update(r=r, z=z, n=n)
        return h_new, (h_new,)


class MUTCell(RecurrentCell):
    """MUT1/MUT2/MUT3 of Jozefowicz et al. (2015); equations in the module docstring."""

    state_names = ("h",)
    gate_names = ("r", "z", "n")
    # blocks of weight_ih (input contributions) and weight_hh (recurrent ones)
    _IH = {"mut1": ("r", "z"), "mut2": ("z", "n"), "mut3": ("r", "z", "n")}
    _HH = {"mut1": ("r", "n"), "mut2": ("r", "z", "n"), "mut3": ("r", "z", "n")}
    _IDENTITY = {"mut1": "n", "mut2": "r", "mut3": None}  # the block fed by x itself

    def __init__(self, input_size: int, hidden_size: int, variant: str = "mut1",
                 forget_bias: float | None = None) -> None:
        super().__init__(input_size, hidden_size, forget_bias)
        if variant not in self._IH:
            raise ValueError(f"unknown MUT variant {variant!r}; valid: {sorted(self._IH)}")
        self.name = variant
        self.ih_blocks = self._IH[variant]
        self.hh_blocks = self._HH[variant]
        self.identity_block = self._IDENTITY[variant]
        self.projected = self.identity_block is not None and input_size != hidden_size
        self._register_params()

    def param_shapes(self):
        H, I = self.hidden_size, self.input_size
        gi = len(self.ih_blocks) + int(self.projected)
        gh = len(self.hh_blocks)
        return {"weight_ih": (gi * H, I), "weight_hh": (gh * H, H), "bias_ih": (gi * H,), "bias_hh": (gh * H,)}

    def set_forget_bias(self, p, value):
        # h' = n z + h (1 - z): the keep gate is 1 - z, so b_z = -value.
        set_block(p["bias_ih"], self.ih_blocks.index("z"), self.hidden_size, -value)
        if "z" in self.hh_blocks:
            set_block(p["bias_hh"], self.hh_blocks.index("z"), self.hidden_size, 0.0)

    def input_projection(self, p, x):
        """(..., I) -> (..., 3H): the input's contribution to r, z and n, in that order."""
        H = self.hidden_size
        lin = linear(x, p["weight_ih"], p["bias_ih"])  # (..., gi*H)
        parts = dict(zip(self.ih_blocks, lin.split(H, dim=-1)))
        if self.identity_block is not None:
            src = lin[..., len(self.ih_blocks) * H:] if self.projected else x
            parts[self.identity_block] = torch.tanh(src) if self.name == "mut1" else src
        return torch.cat([parts["r"], parts["z"], parts["n"]], dim=-1)

    def step(self, p, xw, state, t, below=None, record=None):
        H = self.hidden_size
        h = state[0]
        xr, xz, xn = xw.split(H, dim=-1)
        W = dict(zip(self.hh_blocks, p["weight_hh"].split(H, dim=0)))
        b = dict(zip(self.hh_blocks, p["bias_hh"].split(H, dim=0)))
        r = torch.sigmoid(xr + linear(h, W["r"], b["r"]))
        if self.name == "mut1":
            z = torch.sigmoid(xz)
        elif self.name == "mut2":
            z = torch.sigmoid(xz + linear(h, W["z"], b["z"]))
        else:
            z = torch.sigmoid(xz + linear(torch.tanh(h), W["z"], b["z"]))
        n = torch.tanh(linear(r * h, W["n"], b["n"]) + xn)
        h_new = n * z + h * (1.0 - z)
        if record is not None:
            record.update(r=r, z=z, n=n)
        return h_new, (h_new,)
