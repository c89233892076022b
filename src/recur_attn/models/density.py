"""Recurrent density model for binary frames (polyphonic music as piano rolls).

Given the frames seen so far, the network outputs one Bernoulli probability per
key for the next frame (Boulanger-Lewandowski et al. 2012, the "RNN" baseline;
Chung et al. 2014, Sec. 4.1)::

    h_t = Recurrent(cell)(x_1..x_t)            # (B, T, D*H), x_1 = 0 (the data's shift)
    p(y_t = 1 | x_<=t) = sigmoid(W h_t + b)    # (B, T, K), K = 88 keys

The model returns the logits ``W h_t + b``; the task turns them into the
Bernoulli NLL. ``input_noise`` adds Gaussian noise of that standard deviation to
the inputs while training (the input noise of Greff et al. 2015's search);
``dropout`` is applied between stacked layers and to the last layer's output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from recur_attn.layers import Recurrent


class DensityModel(nn.Module):
    """Args:
    input_size, output_size: units per frame in and out (88 and 88 for piano rolls).
    cell: a name of ``recur_attn.cells.CELLS``; cell_kwargs: its extra arguments.
    hidden_size, num_layers: as nn.LSTM.
    dropout: dropout between layers and on the output of the last one.
    input_noise: standard deviation of Gaussian noise added to the inputs in training.
    impl: Recurrent's implementation ("auto", "torch", "reference").
    """

    def __init__(self, input_size: int, output_size: int, cell: str = "lstm", hidden_size: int = 36,
                 num_layers: int = 1, dropout: float = 0.0, input_noise: float = 0.0,
                 cell_kwargs: Mapping[str, Any] | None = None, impl: str = "auto") -> None:
        super().__init__()
        if input_noise < 0:
            raise ValueError(f"input_noise must be >= 0, got {input_noise}")
        self.input_size, self.output_size = input_size, output_size
        self.input_noise = float(input_noise)
        self.rnn = Recurrent(cell, input_size=input_size, hidden_size=hidden_size, num_layers=num_layers,
                             dropout=dropout, batch_first=True, impl=impl, **dict(cell_kwargs or {}))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.rnn.output_size, output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """x (B, T, K_in) -> logits (B, T, K_out) of the next frame's Bernoulli units."""
        if self.training and self.input_noise > 0:
            x = x + self.input_noise * torch.randn_like(x)
        out, _ = self.rnn(x, lengths=lengths)  # (B, T, D*H)
        return self.head(self.drop(out))
