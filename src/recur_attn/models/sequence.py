"""A recurrent network with a linear read-out: sequence regressor / classifier.

    out_t = Recurrent(cell)(x)_t                     # (B, T, D*H)
    readout "last": y = W out_{len_b} + b            # (B, O), each sequence's true end
    readout "all":  y_t = W out_t + b                # (B, T, O), every step

For a bidirectional network the "last" read-out is the forward direction's
output at the true end of each sequence joined with the backward direction's
output at t = 0 (where it has read the whole sequence), like nn.LSTM's h_n.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from recur_attn.layers import Recurrent

READOUTS = ("last", "all")


class SequenceModel(nn.Module):
    """Recurrent layers (any cell of the zoo) and a linear head.

    Args:
        input_size: features per step (F of x (B, T, F)).
        output_size: outputs per sequence ("last") or per step ("all").
        cell: a name of ``recur_attn.cells.CELLS``.
        hidden_size, num_layers, dropout, bidirectional: as nn.LSTM.
        readout: "last" or "all" (see the module docstring).
        cell_kwargs: extra arguments of the cell (``forget_bias``, ``num_modules``, ...).
    """

    def __init__(self, input_size: int, output_size: int, cell: str = "lstm", hidden_size: int = 128,
                 num_layers: int = 1, dropout: float = 0.0, bidirectional: bool = False,
                 readout: str = "last", cell_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        for name, v in (("input_size", input_size), ("output_size", output_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.input_size = input_size
        self.output_size = output_size
        self.readout = readout
        self.bidirectional = bool(bidirectional)
        self.hidden_size = hidden_size
        self.rnn = Recurrent(cell, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                             dropout=dropout, bidirectional=bidirectional, batch_first=True,
                             **dict(cell_kwargs or {}))
        self.head = nn.Linear(self.rnn.output_size, output_size)

    def features(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The recurrent features the head reads: (B, D*H) for "last", (B, T, D*H) for "all"."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"SequenceModel expects x of shape (B, T, {self.input_size}), got {tuple(x.shape)}"
            )
        out, _ = self.rnn(x, lengths=lengths)  # (B, T, D*H)
        if self.readout == "all":
            return out
        B, T, _ = out.shape
        if lengths is None:
            last = torch.full((B,), T - 1, dtype=torch.long, device=out.device)
        else:
            last = lengths.to(device=out.device, dtype=torch.long) - 1  # (B,)
        rows = torch.arange(B, device=out.device)
        H = self.hidden_size
        fwd = out[rows, last, :H]  # (B, H)
        if not self.bidirectional:
            return fwd
        return torch.cat([fwd, out[:, 0, H:]], dim=-1)  # (B, 2H)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x (B, T, F), lengths (B,) or None -> (B, O) or (B, T, O)."""
        return self.head(self.features(x, lengths))
