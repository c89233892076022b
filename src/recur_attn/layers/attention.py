"""Attention over a set of keys: additive (Bahdanau) and multiplicative (Luong).

Both modules share one interface::

    att = AdditiveAttention(query_size=32, key_size=64, attention_size=48)
    keys_proj = att.project_keys(keys)            # once per source sequence
    context, weights = att(query, keys, mask=mask, keys_proj=keys_proj)

- ``keys`` (B, S, K): the annotations h_1..h_S (the encoder outputs);
- ``query`` (B, Q) for one query a row, or (B, N, Q) for N queries a row at
  once (teacher forcing in Luong's form, where all queries are known);
- ``mask`` (B, S) bool, True = attend (False at padded positions);
- ``context`` (B, K) or (B, N, K); ``weights`` (B, S) or (B, N, S).

The weights are exactly 0 at masked positions and sum to 1 over the others;
a row whose mask is all False is an error (there is nothing to attend to),
never a row of NaNs. The softmax subtracts the row maximum (torch's softmax
does), so large scores do not overflow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def masked_softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over the last dim of ``scores`` (B, [N,] S), 0 where mask is False.

    ``mask`` (B, S) bool, broadcast over the N queries. Raises ValueError when a
    row has no position to attend to.
    """
    if mask is None:
        return torch.softmax(scores, dim=-1)
    if not bool(mask.any(dim=-1).all()):
        rows = (~mask.any(dim=-1)).nonzero().flatten().tolist()
        raise ValueError(f"attention mask has no True entry in batch rows {rows[:10]}: "
                         f"every row must attend to at least one position")
    m = mask if scores.dim() == 2 else mask.unsqueeze(1)  # (B, 1, S)
    scores = scores.masked_fill(~m, float("-inf"))
    return torch.softmax(scores, dim=-1)  # exp(-inf) == 0 exactly


class _Attention(nn.Module):
    """Shared checks and the weighted sum; subclasses define the score."""

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        self.query_size = _check_size("query_size", query_size)
        self.key_size = _check_size("key_size", key_size)

    # subclasses -------------------------------------------------------------
    def project_keys(self, keys: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, query: Tensor, keys_proj: Tensor) -> Tensor:  # pragma: no cover
        """query (B, N, Q), keys_proj (B, S, *) -> energies (B, N, S)."""
        raise NotImplementedError

    def projected_size(self) -> int:  # pragma: no cover
        raise NotImplementedError

    # shared -----------------------------------------------------------------
    def _check(self, query: Tensor, keys: Tensor, mask: Tensor | None,
               keys_proj: Tensor | None) -> None:
        name = type(self).__name__
        if keys.dim() != 3 or keys.shape[-1] != self.key_size:
            raise ValueError(f"{name}: keys must be (B, S, {self.key_size}), got {tuple(keys.shape)}")
        if query.dim() not in (2, 3) or query.shape[-1] != self.query_size \
                or query.shape[0] != keys.shape[0]:
            raise ValueError(f"{name}: query must be (B, {self.query_size}) or "
                             f"(B, N, {self.query_size}) with B={keys.shape[0]}, "
                             f"got {tuple(query.shape)}")
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ValueError(f"{name}: mask must be a bool tensor (True = attend), got {mask.dtype}")
            if mask.shape != keys.shape[:2]:
                raise ValueError(f"{name}: mask must be (B, S) = {tuple(keys.shape[:2])}, "
                                 f"got {tuple(mask.shape)}")
        if keys_proj is not None:
            want = (*keys.shape[:2], self.projected_size())
            if tuple(keys_proj.shape) != want:
                raise ValueError(f"{name}: keys_proj must be {want} (from project_keys), "
                                 f"got {tuple(keys_proj.shape)}")

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor | None = None,
                keys_proj: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Returns (context, weights); see the module docstring for shapes."""
        self._check(query, keys, mask, keys_proj)
        if keys_proj is None:
            keys_proj = self.project_keys(keys)
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query  # (B, N, Q)
        e = self.score(q, keys_proj)  # (B, N, S)
        a = masked_softmax(e, mask)  # (B, N, S)
        context = torch.bmm(a, keys)  # (B, N, K)
        if single:
            return context.squeeze(1), a.squeeze(1)
        return context, a


class AdditiveAttention(_Attention):
    """Additive ("concat") attention of Bahdanau, Cho and Bengio (2014),
    "Neural machine translation by jointly learning to align and translate":

        e_j = v^T tanh(W q + U k_j + b)
        a_j = exp(e_j) / sum_k exp(e_k)          (masked positions excluded)
        c   = sum_j a_j k_j

    W (A x Q), U (A x K), b (A) and v (A) are learned; ``project_keys``
    computes U k_j + b for all j once per source sequence.
    """

    def __init__(self, query_size: int, key_size: int, attention_size: int,
                 bias: bool = True) -> None:
        super().__init__(query_size, key_size)
        self.attention_size = _check_size("attention_size", attention_size)
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)  # W
        self.key_proj = nn.Linear(key_size, attention_size, bias=bias)  # U, b
        self.v = nn.Linear(attention_size, 1, bias=False)  # v

    def projected_size(self) -> int:
        return self.attention_size

    def project_keys(self, keys: Tensor) -> Tensor:
        return self.key_proj(keys)  # (B, S, A)

    def score(self, query: Tensor, keys_proj: Tensor) -> Tensor:
        wq = self.query_proj(query)  # (B, N, A)
        hidden = torch.tanh(wq.unsqueeze(2) + keys_proj.unsqueeze(1))  # (B, N, S, A)
        return self.v(hidden).squeeze(-1)  # (B, N, S)

    def extra_repr(self) -> str:
        return f"query_size={self.query_size}, key_size={self.key_size}, attention_size={self.attention_size}"


class MultiplicativeAttention(_Attention):
    """Multiplicative attention of Luong, Pham and Manning (2015), "Effective
    approaches to attention-based neural machine translation":

        dot:      e_j = q^T k_j                    (needs Q == K)
        general:  e_j = q^T W_a k_j                (W_a is Q x K)
        a = softmax(e) over unmasked positions,  c = sum_j a_j k_j

    With ``scaled=True`` the energies are divided by sqrt(Q) (Vaswani et al.
    2017). ``project_keys`` computes W_a k_j once ("general"), or returns the
    keys unchanged ("dot").
    """

    METHODS = ("dot", "general")

    def __init__(self, query_size: int, key_size: int, method: str = "general",
                 scaled: bool = False) -> None:
        super().__init__(query_size, key_size)
        if method not in self.METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(self.METHODS)}")
        if method == "dot" and query_size != key_size:
            raise ValueError(f"method='dot' needs query_size == key_size, got {query_size} and {key_size}")
        self.method = method
        self.scaled = bool(scaled)
        self.weight = nn.Linear(key_size, query_size, bias=False) if method == "general" else None  # W_a

    def projected_size(self) -> int:
        return self.query_size

    def project_keys(self, keys: Tensor) -> Tensor:
        return keys if self.weight is None else self.weight(keys)  # (B, S, Q)

    def score(self, query: Tensor, keys_proj: Tensor) -> Tensor:
        e = torch.bmm(query, keys_proj.transpose(1, 2))  # (B, N, S)
        if self.scaled:
            e = e / math.sqrt(self.query_size)
        return e

    def extra_repr(self) -> str:
        return (f"query_size={self.query_size}, key_size={self.key_size}, method={self.method!r}, "
                f"scaled={self.scaled}")
