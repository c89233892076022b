"""The cell zoo: one time step of every recurrent cell, and a registry of names.

>>> from recur_attn.cells import CELLS, build_cell
>>> cell = build_cell("cifg", input_size=8, hidden_size=16)
"""

from __future__ import annotations

from functools import partial

from .base import RecurrentCell, State
from .clockwork import ClockworkCell
from .depth_gated import DepthGatedLSTMCell
from .gru import GRUCell, MUTCell
from .lstm import LSTM_VARIANTS, LSTMCell, LSTMSpec
from .rnn import ElmanCell

#: name -> a callable (input_size, hidden_size, **kwargs) -> RecurrentCell
CELLS: dict[str, object] = {
    "rnn_tanh": partial(ElmanCell, nonlinearity="tanh"),
    "rnn_relu": partial(ElmanCell, nonlinearity="relu"),
    **{name: partial(LSTMCell, spec=name) for name in LSTM_VARIANTS},
    "gru": partial(GRUCell, reset_after=True),
    "gru_cho": partial(GRUCell, reset_after=False),
    "mut1": partial(MUTCell, variant="mut1"),
    "mut2": partial(MUTCell, variant="mut2"),
    "mut3": partial(MUTCell, variant="mut3"),
    "clockwork": ClockworkCell,
    "dglstm": DepthGatedLSTMCell,
}

LSTM_FAMILY = tuple(LSTM_VARIANTS) + ("dglstm",)
GRU_FAMILY = ("gru", "gru_cho", "mut1", "mut2", "mut3")


def check_cell_name(name: str) -> str:
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; valid names: {', '.join(sorted(CELLS))}")
    return name


def build_cell(name: str, input_size: int, hidden_size: int, **kwargs) -> RecurrentCell:
    """Build the cell registered under ``name`` (see CELLS for the names)."""
    check_cell_name(name)
    try:
        return CELLS[name](input_size, hidden_size, **kwargs)
    except TypeError as err:  # an option the cell does not take
        raise ValueError(f"cell {name!r}: {err}") from None


__all__ = [
    "CELLS", "GRU_FAMILY", "LSTM_FAMILY", "ClockworkCell", "DepthGatedLSTMCell", "ElmanCell", "GRUCell",
    "LSTMCell", "LSTMSpec", "LSTM_VARIANTS", "MUTCell", "RecurrentCell", "State", "build_cell",
    "check_cell_name",
]
