"""The LSTM family of Greff et al. (2015), "LSTM: A Search Space Odyssey", from one spec.

Vanilla LSTM (Greff et al. 2015, eq. 1-6; Gers & Schmidhuber 2000 peepholes)::

    z_t = g(W_z x_t + R_z h_{t-1} + b_z)                    block input ("g" gate)
    i_t = sigma(W_i x_t + R_i h_{t-1} + p_i * c_{t-1} + b_i)  input gate
    f_t = sigma(W_f x_t + R_f h_{t-1} + p_f * c_{t-1} + b_f)  forget gate
    c_t = z_t * i_t + c_{t-1} * f_t                          cell
    o_t = sigma(W_o x_t + R_o h_{t-1} + p_o * c_t + b_o)      output gate (peeks at c_t)
    h_t = h(c_t) * o_t                                       block output

with g = h = tanh. The eight variants change one thing each:

    nig   no input gate:          i_t = 1
    nfg   no forget gate:         f_t = 1
    nog   no output gate:         o_t = 1
    niaf  no input activation:    g(x) = x
    noaf  no output activation:   h(x) = x
    np    no peepholes:           p_i = p_f = p_o = 0 (no such parameters)
    cifg  coupled gates:          f_t = 1 - i_t (no forget-gate parameters at all)
    fgr   full gate recurrence:   every gate a in {i, f, o} also gets
                                  sum_{b in {i,f,o}} R_{ab} b_{t-1} (9 extra H x H matrices)

``lstm`` is exactly torch.nn.LSTM (Hochreiter & Schmidhuber 1997 with the
forget gate of Gers et al. 2000, no peepholes): the same equations as ``np``.

Parameters follow nn.LSTM: ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H),
``bias_ih``, ``bias_hh`` (G*H) with the present gate blocks in the order
i, f, g, o (G = 4 when all are present; nig/nfg/nog/cifg have 3), so
``Recurrent("lstm")`` loads nn.LSTM's state_dict. Peepholes are
``weight_ph`` (P, H), one row per gated gate among (i, f, o) in that order;
fgr's gate recurrence is ``weight_gh`` (3H, 3H) acting on [i; f; o]_{t-1},
which is carried in the state as a third tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from .base import RecurrentCell, State, set_block


@dataclass(frozen=True)
class LSTMSpec:
    """The switches that define a member of the Greff family."""

    input_gate: bool = True
    forget_gate: bool = True
    output_gate: bool = True
    input_activation: bool = True
    output_activation: bool = True
    peepholes: bool = True
    coupled: bool = False  # cifg: f = 1 - i
    full_gate_recurrence: bool = False  # fgr

    def __post_init__(self) -> None:
        if self.coupled and (self.forget_gate or not self.input_gate):
            raise ValueError("coupled gates (f = 1 - i) need an input gate and no forget gate")
        if self.full_gate_recurrence and not (self.input_gate and self.forget_gate and self.output_gate):
            raise ValueError("full gate recurrence needs all three gates")

    @property
    def blocks(self) -> tuple[str, ...]:
        """Present blocks of the fused matrices, in nn.LSTM's order i, f, g, o."""
        out = []
        if self.input_gate:
            out.append("i")
        if self.forget_gate:
            out.append("f")
        out.append("g")
        if self.output_gate:
            out.append("o")
        return tuple(out)

    @property
    def gated(self) -> tuple[str, ...]:
        """Sigmoid gates that have their own pre-activation (peepholes / fgr act on these)."""
        return tuple(b for b in self.blocks if b != "g")


LSTM_VARIANTS: dict[str, LSTMSpec] = {
    "lstm": LSTMSpec(peepholes=False),
    "vanilla": LSTMSpec(),
    "nig": LSTMSpec(input_gate=False),
    "nfg": LSTMSpec(forget_gate=False),
    "nog": LSTMSpec(output_gate=False),
    "niaf": LSTMSpec(input_activation=False),
    "noaf": LSTMSpec(output_activation=False),
    "np": LSTMSpec(peepholes=False),
    "cifg": LSTMSpec(forget_gate=False, coupled=True),
    "fgr": LSTMSpec(full_gate_recurrence=True),
}


class LSTMCell(RecurrentCell):
    """A member of the Greff et al. (2015) LSTM family; see the module docstring.

    Args:
        input_size, hidden_size: I and H.
        spec: an :class:`LSTMSpec`, or the name of a variant in LSTM_VARIANTS.
        forget_bias: if given, the forget gate's bias starts at this value
            (Jozefowicz et al. 2015 recommend 1.0): b_ih[f] = forget_bias, b_hh[f] = 0.
            For cifg, whose forget gate is 1 - i, the input gate's bias starts at
            -forget_bias, which gives the same f_t. nfg has no forget gate and
            rejects it.
    """

    state_names = ("h", "c")

    def __init__(self, input_size: int, hidden_size: int, spec: LSTMSpec | str = "vanilla",
                 forget_bias: float | None = None) -> None:
        super().__init__(input_size, hidden_size, forget_bias)
        if isinstance(spec, str):
            if spec not in LSTM_VARIANTS:
                raise ValueError(f"unknown LSTM variant {spec!r}; valid: {sorted(LSTM_VARIANTS)}")
            self.name = spec
            spec = LSTM_VARIANTS[spec]
        else:
            self.name = "lstm_custom"
        self.spec = spec
        self.blocks = spec.blocks
        self.gated = spec.gated
        self.gate_names = tuple(b for b in ("i", "f", "g", "o") if b in self.blocks or (b == "f" and spec.coupled))
        if spec.full_gate_recurrence:
            self.state_names = ("h", "c", "a")
        self._register_params()

    def state_sizes(self) -> tuple[int, ...]:
        H = self.hidden_size
        if self.spec.full_gate_recurrence:
            return (H, H, len(self.gated) * H)
        return (H, H)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        G, H, I = len(self.blocks), self.hidden_size, self.input_size
        shapes = {"weight_ih": (G * H, I), "weight_hh": (G * H, H), "bias_ih": (G * H,), "bias_hh": (G * H,)}
        if self.spec.peepholes:
            shapes["weight_ph"] = (len(self.gated), H)
        if self.spec.full_gate_recurrence:
            P = len(self.gated) * H
            shapes["weight_gh"] = (P, P)
        return shapes

    def set_forget_bias(self, p: dict[str, Tensor], value: float) -> None:
        H = self.hidden_size
        if self.spec.forget_gate:
            k, v = self.blocks.index("f"), value
        elif self.spec.coupled:
            k, v = self.blocks.index("i"), -value
        else:
            super().set_forget_bias(p, value)
            return
        set_block(p["bias_ih"], k, H, v)
        set_block(p["bias_hh"], k, H, 0.0)

    def extra_repr(self) -> str:
        flags = [f.name for f in fields(self.spec) if getattr(self.spec, f.name) != getattr(LSTMSpec(), f.name)]
        return f"{self.input_size}, {self.hidden_size}, variant={self.name}, changed={flags}"

    def step(self, p, xw, state, t, below=None, record=None):
        spec, H = self.spec, self.hidden_size
        h_prev, c_prev = state[0], state[1]
        pre = xw + torch.nn.functional.linear(h_prev, p["weight_hh"], p["bias_hh"])  # (B, G*H)
        chunks = dict(zip(self.blocks, pre.split(H, dim=-1)))
        if spec.full_gate_recurrence:
            rec = torch.nn.functional.linear(state[2], p["weight_gh"])  # (B, 3H)
            for name, r in zip(self.gated, rec.split(H, dim=-1)):
                chunks[name] = chunks[name] + r
        if spec.peepholes:
            peep = dict(zip(self.gated, p["weight_ph"].unbind(0)))  # each (H,)
            for name in ("i", "f"):
                if name in peep:
                    chunks[name] = chunks[name] + peep[name] * c_prev
        i = torch.sigmoid(chunks["i"]) if spec.input_gate else None
        if spec.forget_gate:
            f = torch.sigmoid(chunks["f"])
        elif spec.coupled:
            f = 1.0 - i
        else:
            f = None
        g = torch.tanh(chunks["g"]) if spec.input_activation else chunks["g"]
        c = (c_prev if f is None else f * c_prev) + (g if i is None else i * g)
        if spec.output_gate:
            pre_o = chunks["o"] + peep["o"] * c if spec.peepholes else chunks["o"]
            o = torch.sigmoid(pre_o)
        else:
            o = None
        hc = torch.tanh(c) if spec.output_activation else c
        h = hc if o is None else o * hc
        if record is not None:
            for name, val in (("i", i), ("f", f), ("g", g), ("o", o)):
                if val is not None:
                    record[name] = val
        if spec.full_gate_recurrence:
            return h, (h, c, torch.cat([i, f, o], dim=-1))
        return h, (h, c)
