"""The N-dimensional Grid LSTM block (Kalchbrenner, Danihelka & Graves 2015,
"Grid Long Short-Term Memory", arXiv:1507.01526).

A block sits at one position of an N-dimensional grid. Along every grid
dimension k it receives a hidden vector h_k and (for an LSTM dimension) a memory
vector m_k from the neighbouring block, and it sends new ones on to the next
block along that dimension. See :class:`GridLSTM` for the equations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["GridLSTM", "GRID_KINDS"]

#: kinds of transform a dimension may use: the LSTM, or a plain non-LSTM map h'_k = a(V H).
GRID_KINDS = ("lstm", "tanh", "relu", "identity")
_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda v: v}


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _per_dim(name: str, value, n: int) -> list:
    """A scalar broadcast to ``n`` dimensions, or a sequence of length ``n``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{name} must have one entry per dimension ({n}), got {len(value)}: {value!r}")
    return value


class _BlockWeights(nn.Module):
    """The weights of one block copy: one fused matrix whose row blocks are the
    per-dimension transforms, in computation order (non-priority dimensions first,
    then the priority dimensions in their order).

    ``weight`` (sum_k G_k H_k, I + sum_k H_k), ``bias`` (sum_k G_k H_k), where
    G_k = 4 for an LSTM dimension (gate blocks i, f, g, o as in nn.LSTM) and 1 for
    a non-LSTM dimension.
    """

    def __init__(self, rows: int, cols: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, cols))
        self.bias = nn.Parameter(torch.empty(rows))


class GridLSTM(nn.Module):
    r"""One N-dimensional Grid LSTM block (Kalchbrenner, Danihelka & Graves 2015).

    Inputs: the hidden vectors h_1..h_N of the N dimensions, the memory vectors
    m_k of the LSTM dimensions, and optionally an external input x. They are
    concatenated into

        H = [x; h_1; ...; h_N]                                   # (B, I + sum_k H_k)

    Every dimension k has its own weights W_k, b_k (separate per dimension). An
    LSTM dimension computes, with the fused gate layout of nn.LSTM (i, f, g, o):

        [i; f; g; o] = W_k H + b_k                                # (B, 4 H_k)
        i, f, o = sigmoid(i), sigmoid(f), sigmoid(o);  g = tanh(g)
        m'_k = f * m_k + i * g
        h'_k = o * tanh(m'_k)                                     # (h'_k, m'_k) = LSTM_k(H, m_k)

    A non-LSTM dimension (kind "tanh", "relu" or "identity") has no memory:

        h'_k = a(V_k H + b_k)                                     # (B, H_k)

    Priority dimensions (``priority``, Sect. 3.4 of the paper) are computed after
    all the others, one after another in the given order; each sees the *new*
    hidden vectors of every dimension computed before it:

        H' = [x; h'_1; ...; h'_j; h_p; ...]   for priority dimension p,
        (h'_p, m'_p) = LSTM_p(H', m_p)

    Weight tying (Sect. 3.3): a grid network places one block at every position
    of the grid. ``tied[d]`` says whether the block's weights are shared by all
    positions along grid dimension d (e.g. ``tied=True`` along depth gives the
    paper's "tied" networks). Along an untied dimension the block keeps
    ``grid_size[d]`` independent copies of all its weights, and ``forward`` picks
    the copy of the block's ``position``. Tying is real sharing: all positions of
    a tied dimension use the very same parameters (``weights_at(p) is
    weights_at(q)``), and the parameter count is divided accordingly.

    Args:
        num_dims: N, the number of grid dimensions.
        hidden_size: H_k, one int for all dimensions or one per dimension.
        kinds: "lstm" (default) or a non-LSTM kind ("tanh", "relu", "identity"),
            one for all or one per dimension.
        priority: dimension indices computed last, in this order.
        input_size: I, the size of an external input x (0: none).
        tied: per grid dimension, whether the weights are shared along it
            (one bool for all dimensions, or one per dimension).
        grid_size: per grid dimension, the number of positions; needed (an int)
            for every untied dimension, ignored (may be None) for tied ones.
        forget_bias: added to the forget gate biases at initialisation (None: no change).

    Parameters are stored per block copy in ``copies[c].weight`` / ``.bias``; the
    rows of dimension k are ``dim_weight(k, position)`` / ``dim_bias(k, position)``
    (views, not copies). Weights are initialised U(-1/sqrt(H_max), 1/sqrt(H_max)) like
    torch's recurrent layers.

    Shapes: ``forward(h, m, x=None, position=None)`` with ``h`` a sequence of N
    tensors (B, H_k), ``m`` a sequence of N entries, a (B, H_k) tensor for every
    LSTM dimension and None for non-LSTM dimensions (``m=None``: zero memories),
    ``x`` (B, I). Returns ``(h_new, m_new)``, lists of N entries laid out the same way.
    """

    def __init__(
        self,
        num_dims: int,
        hidden_size: int | Sequence[int],
        kinds: str | Sequence[str] = "lstm",
        priority: Sequence[int] = (),
        input_size: int = 0,
        tied: bool | Sequence[bool] = True,
        grid_size: int | None | Sequence[int | None] = None,
        forget_bias: float | None = None,
    ) -> None:
        super().__init__()
        n = self.num_dims = _positive_int("num_dims", num_dims)
        self.hidden_sizes = [_positive_int(f"hidden_size[{k}]", h) for k, h in
                             enumerate(_per_dim("hidden_size", hidden_size, n))]
        self.kinds = _per_dim("kinds", kinds, n)
        for k, kind in enumerate(self.kinds):
            if kind not in GRID_KINDS:
                raise ValueError(f"unknown kind {kind!r} for dimension {k}; valid choices: {', '.join(GRID_KINDS)}")
        priority = [int(p) for p in priority]
        for p in priority:
            if not 0 <= p < n:
                raise ValueError(f"priority dimension {p} out of range for num_dims={n}")
        if len(set(priority)) != len(priority):
            raise ValueError(f"priority lists a dimension twice: {priority}")
        self.priority = priority
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 0:
            raise ValueError(f"input_size must be a non-negative integer, got {input_size!r}")
        self.input_size = input_size
        self.tied = [bool(t) for t in _per_dim("tied", tied, n)]
        sizes = _per_dim("grid_size", grid_size, n)
        self.grid_size: list[int | None] = []
        for d, (t, s) in enumerate(zip(self.tied, sizes)):
            if not t:
                _positive_int(f"grid_size[{d}] (dimension {d} is untied)", s)
            self.grid_size.append(None if t else s)
        self.forget_bias = None if forget_bias is None else float(forget_bias)

        # computation order: stage 0 = all non-priority dimensions together, then each priority dim
        first = [k for k in range(n) if k not in priority]
        self.stages: list[list[int]] = ([first] if first else []) + [[p] for p in priority]
        self.order = [k for stage in self.stages for k in stage]
        self.gates = [4 if kind == "lstm" else 1 for kind in self.kinds]
        # row offset of each dimension inside the fused weight
        self._row = {}
        r = 0
        for k in self.order:
            self._row[k] = (r, r + self.gates[k] * self.hidden_sizes[k])
            r += self.gates[k] * self.hidden_sizes[k]
        self.num_rows = r
        self.total_input = input_size + sum(self.hidden_sizes)  # columns of W: [x; h_1; ...; h_N]
        self._col = []
        c = input_size
        for h in self.hidden_sizes:
            self._col.append((c, c + h))
            c += h

        self._untied = [d for d in range(n) if not self.tied[d]]
        num_copies = math.prod(self.grid_size[d] for d in self._untied)  # type: ignore[misc]
        self.copies = nn.ModuleList(_BlockWeights(self.num_rows, self.total_input) for _ in range(num_copies))
        self.reset_parameters()

    # ---- parameters -------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(max(self.hidden_sizes))
        for copy in self.copies:
            copy.weight.uniform_(-bound, bound)
            copy.bias.uniform_(-bound, bound)
            if self.forget_bias is not None:
                for k in range(self.num_dims):
                    if self.kinds[k] == "lstm":
                        r0, _ = self._row[k]
                        h = self.hidden_sizes[k]
                        copy.bias[r0 + h:r0 + 2 * h] = self.forget_bias

    @property
    def num_copies(self) -> int:
        return len(self.copies)

    def copy_index(self, position: Sequence[int] | None) -> int:
        """Index into ``copies`` of the block at ``position`` (one int per grid dimension)."""
        if not self._untied:
            return 0
        if position is None:
            raise ValueError(
                f"GridLSTM: dimensions {self._untied} are untied, so forward needs the block's position "
                f"(one index per dimension, {self.num_dims} in all)")
        position = list(position)
        if len(position) != self.num_dims:
            raise ValueError(f"position must have {self.num_dims} entries, got {position!r}")
        idx = 0
        for d in self._untied:
            size = self.grid_size[d]
            p = int(position[d])
            if not 0 <= p < size:  # type: ignore[operator]
                raise ValueError(f"position[{d}]={p} out of range: grid_size[{d}]={size}")
            idx = idx * size + p  # type: ignore[operator]
        return idx

    def weights_at(self, position: Sequence[int] | None = None) -> _BlockWeights:
        """The weight module used by the block at ``position`` (shared along tied dimensions)."""
        return self.copies[self.copy_index(position)]

    def dim_weight(self, k: int, position: Sequence[int] | None = None) -> Tensor:
        """W_k, the rows of dimension k: (G_k H_k, I + sum H), a view of the parameter."""
        r0, r1 = self._row[k]
        return self.weights_at(position).weight[r0:r1]

    def dim_bias(self, k: int, position: Sequence[int] | None = None) -> Tensor:
        r0, r1 = self._row[k]
        return self.weights_at(position).bias[r0:r1]

    # ---- computation ------------------------------------------------------
    def init_memory(self, batch: int, dtype: torch.dtype, device: torch.device) -> list[Tensor | None]:
        return [torch.zeros(batch, h, dtype=dtype, device=device) if kind == "lstm" else None
                for h, kind in zip(self.hidden_sizes, self.kinds)]

    def forward(
        self,
        h: Sequence[Tensor],
        m: Sequence[Tensor | None] | None = None,
        x: Tensor | None = None,
        position: Sequence[int] | None = None,
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        n = self.num_dims
        if len(h) != n:
            raise ValueError(f"GridLSTM expects {n} hidden vectors, got {len(h)}")
        batch = h[0].shape[0]
        for k, hk in enumerate(h):
            if hk.dim() != 2 or hk.shape[1] != self.hidden_sizes[k]:
                raise ValueError(f"h[{k}] must be (B, {self.hidden_sizes[k]}), got {tuple(hk.shape)}")
        if m is None:
            m = self.init_memory(batch, h[0].dtype, h[0].device)
        elif len(m) != n:
            raise ValueError(f"GridLSTM expects {n} memory entries (None for non-LSTM dimensions), got {len(m)}")
        if self.input_size:
            if x is None or x.dim() != 2 or x.shape[1] != self.input_size:
                got = None if x is None else tuple(x.shape)
                raise ValueError(f"GridLSTM built with input_size={self.input_size} needs x (B, "
                                 f"{self.input_size}), got {got}")
        elif x is not None:
            raise ValueError("GridLSTM built with input_size=0 got an input x")
        w = self.weights_at(position)
        h_new: list[Tensor] = list(h)
        m_new: list[Tensor | None] = list(m)
        parts = ([x] if self.input_size else []) + list(h)
        for stage in self.stages:
            H = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, I + sum H_k)
            r0 = self._row[stage[0]][0]
            r1 = self._row[stage[-1]][1]
            z = F.linear(H, w.weight[r0:r1], w.bias[r0:r1])  # (B, sum_{k in stage} G_k H_k)
            off = 0
            for k in stage:
                hk = self.hidden_sizes[k]
                g = self.gates[k] * hk
                zk = z[:, off:off + g]
                off += g
                if self.kinds[k] == "lstm":
                    mk = m[k]
                    if mk is None:
                        raise ValueError(f"dimension {k} is an LSTM dimension: m[{k}] must be a tensor, not None")
                    i, f, gg, o = zk.chunk(4, dim=1)  # each (B, H_k)
                    c = torch.sigmoid(f) * mk + torch.sigmoid(i) * torch.tanh(gg)
                    h_new[k] = torch.sigmoid(o) * torch.tanh(c)
                    m_new[k] = c
                else:
                    h_new[k] = _ACTIVATIONS[self.kinds[k]](zk)
                    m_new[k] = None
                parts[k + (1 if self.input_size else 0)] = h_new[k]
        return h_new, m_new

    def extra_repr(self) -> str:
        return (f"num_dims={self.num_dims}, hidden_sizes={self.hidden_sizes}, kinds={self.kinds}, "
                f"priority={self.priority}, input_size={self.input_size}, tied={self.tied}, "
                f"grid_size={self.grid_size}, copies={self.num_copies}")
