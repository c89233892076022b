"""Whole-sequence layers: Recurrent (any cell of the zoo), attention, Grid LSTM."""

from .recurrent import Recurrent, reverse_padded

__all__ = ["Recurrent", "reverse_padded"]

from .grid import GridLSTM  # noqa: E402  (issue 9)

__all__ += ["GridLSTM"]
from .attention import AdditiveAttention, MultiplicativeAttention, masked_softmax  # noqa: E402

__all__ += ["AdditiveAttention", "MultiplicativeAttention", "masked_softmax"]
