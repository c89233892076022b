"""The base class every cell of the zoo derives from.

A cell computes one time step. Its parameters follow nn.LSTM / nn.GRU's
names (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``) and fused gate
layout, so that the input projection of all time steps is one GEMM:
``cell.input_projection(p, x)`` for x (T, B, I) gives (T, B, G*H), and
``cell.step(p, xw_t, state, t)`` consumes one slice of it.

Every method that computes takes the parameters as a dict ``p`` instead of
reading ``self``: a :class:`~recur_attn.layers.Recurrent` keeps the parameters
of all its layers under nn.LSTM's names (``weight_ih_l0``, ...) and hands
each cell its own slice, while a cell used on its own (``cell(x, state)``)
passes its own parameters.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


def check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class RecurrentCell(nn.Module):
    """One step of a recurrent network; subclasses state their equations.

    Class attributes:
      state_names: names of the state tensors, ("h",) or ("h", "c") ...
      gate_names: the gate activations :meth:`step` can report when recording.
      depth_gated: True for cells that read the memory of the layer below.
    """

    state_names: ClassVar[tuple[str, ...]] = ("h",)
    gate_names: ClassVar[tuple[str, ...]] = ()
    depth_gated: ClassVar[bool] = False
    name: ClassVar[str] = "cell"

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = None) -> None:
        super().__init__()
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.forget_bias = None if forget_bias is None else float(forget_bias)

    # ---- parameters -------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _register_params(self) -> None:
        for pname, shape in self.param_shapes().items():
            self.register_parameter(pname, nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def params(self) -> dict[str, Tensor]:
        return dict(self._parameters)  # type: ignore[arg-type]

    @torch.no_grad()
    def init_params(self, p: dict[str, Tensor]) -> None:
        """Fill ``p`` in place: U(-1/sqrt(H), 1/sqrt(H)) like torch's RNNs."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for w in p.values():
            w.uniform_(-bound, bound)
        if self.forget_bias is not None:
            self.set_forget_bias(p, self.forget_bias)

    def reset_parameters(self) -> None:
        if self._parameters:
            self.init_params(self.params())

    # ---- computation ------------------------------------------------------
    @property
    def num_states(self) -> int:
        return len(self.state_names)

    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,) * self.num_states

    def init_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> State:
        return tuple(torch.zeros(batch, s, dtype=dtype, device=device) for s in self.state_sizes())

    def input_projection(self, p: dict[str, Tensor], x: Tensor) -> Tensor:
        """x (..., I) -> (..., G*H): x W_ih^T + b_ih for all steps at once."""
        return torch.nn.functional.linear(x, p["weight_ih"], p.get("bias_ih"))

    def step(
        self,
        p: dict[str, Tensor],
        xw: Tensor,
        state: State,
        t: int,
        below: Tensor | None = None,
        record: dict | None = None,
    ) -> tuple[Tensor, State]:
        """One step. xw (B, G*H) is this step's slice of :meth:`input_projection`.

        Returns (h_t, new_state). When ``record`` is a dict, the gate
        activations of this step are stored in it by name.
        """
        raise NotImplementedError

    def check_input(self, x: Tensor, where: str) -> None:
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{where}: expected input with {self.input_size} features in its last "
                f"dimension, got a tensor of shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor, state: State | Tensor | None = None, t: int = 0,
                below: Tensor | None = None):
        """One step on its own parameters, like nn.LSTMCell.

        x (B, I); state as returned by a previous call (None: zeros).
        Returns h (cells without memory) or the state tuple, e.g. (h, c).
        """
        self.check_input(x, f"{type(self).__name__}")
        if x.dim() != 2:
            raise ValueError(f"{type(self).__name__}: expected input (B, I), got {tuple(x.shape)}")
        if state is None:
            state = self.init_state(x.shape[0], x.dtype, x.device)
        elif isinstance(state, Tensor):
            state = (state,)
        p = self.params()
        _, new = self.step(p, self.input_projection(p, x), tuple(state), t, below)
        return new[0] if self.num_states == 1 else new

    def set_forget_bias(self, p: dict[str, Tensor], value: float) -> None:
        raise ValueError(
            f"cell {self.name!r} has no forget gate (nor a gate that plays its part): "
            f"forget_bias={value} does not apply to it"
        )

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


def set_block(bias: Tensor, block: int, hidden: int, value: float) -> None:
    """bias[block*H:(block+1)*H] = value (in place, no grad)."""
    with torch.no_grad():
        bias[block * hidden:(block + 1) * hidden].fill_(value)
