"""Whole-sequence layers: Recurrent (any cell of the zoo), attention, Grid LSTM."""

from .attention import AdditiveAttention, MultiplicativeAttention, masked_softmax
from .grid import GridLSTM
from .recurrent import Recurrent, reverse_padded

__all__ = ["AdditiveAttention", "GridLSTM", "MultiplicativeAttention", "Recurrent", "masked_softmax",
           "reverse_padded"]
