"""Character-level recurrent language model (Graves 2013; Karpathy's char-rnn).

    e_t = E[c_t]                                   # (B, T, E) embedding
    h_t, s_t = Recurrent(cell)(e_1..e_t, s_0)      # (B, T, H), carried state s
    p(c_{t+1} | c_<=t) = softmax(W h_t + b)        # (B, T, V)

``forward`` takes and returns the recurrent state so that a task can carry it
across consecutive TBPTT chunks; :meth:`CharLM.reset_state` zeroes the rows of a
state where a new document begins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from recur_attn.layers import Recurrent

State = Tensor | tuple[Tensor, ...]


def map_state(state: State, fn) -> State:
    """Apply ``fn`` to every tensor of a state (a tensor or a tuple of tensors)."""
    return fn(state) if isinstance(state, Tensor) else tuple(fn(s) for s in state)


class CharLM(nn.Module):
    """Args:
    vocab_size: characters in the vocabulary.
    cell, cell_kwargs: the recurrent cell (a name of ``recur_attn.cells.CELLS``) and its arguments.
    embedding_size, hidden_size, num_layers: sizes.
    dropout: between layers and on the last layer's output.
    impl: Recurrent's implementation.
    """

    def __init__(self, vocab_size: int, cell: str = "lstm", embedding_size: int = 64, hidden_size: int = 256,
                 num_layers: int = 2, dropout: float = 0.0, cell_kwargs: Mapping[str, Any] | None = None,
                 impl: str = "auto") -> None:
        super().__init__()
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        self.vocab_size = vocab_size
        # the arguments, as plain Python values: stored in checkpoints to rebuild the model
        self.config = {"vocab_size": vocab_size, "cell": str(cell), "embedding_size": int(embedding_size),
                       "hidden_size": int(hidden_size), "num_layers": int(num_layers), "dropout": float(dropout),
                       "cell_kwargs": {str(k): v for k, v in dict(cell_kwargs or {}).items()}, "impl": str(impl)}
        self.embed = nn.Embedding(vocab_size, embedding_size)
        self.rnn = Recurrent(cell, input_size=embedding_size, hidden_size=hidden_size, num_layers=num_layers,
                             dropout=dropout, batch_first=True, impl=impl, **dict(cell_kwargs or {}))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.rnn.output_size, vocab_size)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (B, T) long ids, state or None -> (logits (B, T, V), final state)."""
        if x.dim() != 2:
            raise ValueError(f"CharLM expects ids of shape (B, T), got {tuple(x.shape)}")
        out, state = self.rnn(self.embed(x), state)  # (B, T, H)
        return self.head(self.drop(out)), state

    @staticmethod
    def reset_state(state: State | None, reset: Tensor) -> State | None:
        """Zero the rows b of ``state`` (each (L*D, B, H)) where reset[b] is True."""
        if state is None:
            return None
        keep = (~reset).to(torch.float32)[None, :, None]  # (1, B, 1)
        return map_state(state, lambda s: s * keep.to(s.dtype))

    @staticmethod
    def detach_state(state: State | None) -> State | None:
        return None if state is None else map_state(state, lambda s: s.detach())

    @torch.no_grad()
    def generate(self, prime: Tensor, length: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
        """Sample ``length`` ids after the prime ids (1-D long) -> (length,) long.

        Each next id is drawn from softmax(logits / temperature); temperature 0 is greedy.
        """
        if prime.dim() != 1 or len(prime) == 0:
            raise ValueError("prime must be a non-empty 1-D tensor of ids")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        logits, state = self(prime[None, :])  # (1, P, V)
        last = logits[0, -1]
        out = []
        for _ in range(length):
            if temperature == 0:
                nxt = last.argmax()
            else:
                probs = torch.softmax(last / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[0]
            out.append(nxt)
            logits, state = self(nxt.view(1, 1), state)
            last = logits[0, -1]
        return torch.stack(out) if out else prime.new_zeros(0)
