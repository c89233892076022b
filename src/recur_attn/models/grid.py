"""Networks built from Grid LSTM blocks (Kalchbrenner, Danihelka & Graves 2015),
and the feed-forward baselines of the parity experiment.

* :class:`GridLSTM1D` -- a 1-D Grid LSTM: a deep feed-forward network whose
  layers are LSTM blocks along depth (parity, memorisation).
* :class:`GridLSTM2D` -- a 2-D Grid LSTM over time x depth, with nn.LSTM's
  call signature, a drop-in for a stacked LSTM; :class:`GridSequenceModel`
  puts a linear head on it, with the interface of
  :class:`recur_attn.models.SequenceModel`.
* :class:`GridLSTM3D` -- a 3-D Grid LSTM over the two image axes and depth,
  a pixel (patch) classifier.
* :class:`GridCharLM`, :class:`GridDensityModel` -- the character-level and
  music models with a 2-D Grid LSTM in place of the stacked recurrence.
* :class:`FeedForwardNet` -- tanh / ReLU multilayer perceptron; can size its
  width to a given parameter count (the baselines of the parity experiment).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recur_attn.layers.grid import GridLSTM
from recur_attn.models.charlm import CharLM
from recur_attn.models.density import DensityModel

__all__ = ["GridLSTM1D", "GridLSTM2D", "GridSequenceModel", "GridLSTM3D", "FeedForwardNet", "GridCharLM",
           "GridDensityModel", "count_parameters"]

_INPUT_ACTS = {"identity": lambda v: v, "tanh": torch.tanh, "relu": torch.relu}


def count_parameters(module: nn.Module) -> int:
    """Number of distinct trainable scalars (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _check_pos(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")
    return value


# ======================================================================================
def scale_parameters_(module: nn.Module, init_scale) -> float:
    """Multiply every parameter of ``module`` by ``init_scale`` (> 0) in place; returns it as a float."""
    if isinstance(init_scale, bool) or not isinstance(init_scale, (int, float)) or not init_scale > 0:
        raise ValueError(f"init_scale must be a positive number, got {init_scale!r}")
    if init_scale != 1.0:
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(init_scale)
    return float(init_scale)


class GridLSTM1D(nn.Module):
    r"""1-D Grid LSTM: a feed-forward network with LSTM blocks along depth.

    The whole input vector enters once through a projection (a non-LSTM
    dimension), then ``depth`` one-dimensional Grid LSTM blocks follow:

        h_0 = a(W_in x + b_in),  m_0 = 0  (or W_m x + b_m with init_memory="input")
        (h_l, m_l) = LSTM_l(h_{l-1}, m_{l-1}),   l = 1..depth   (LSTM_l = LSTM_1 if tied)
        y = W_out h_depth + b_out                                  # (B, output_size)

    With ``input_every_layer=True`` the block also reads x at every layer,
    (h_l, m_l) = LSTM_l([x; h_{l-1}], m_{l-1}).

    ``init_scale`` multiplies every initial weight and bias (of the projection,
    the blocks and the head) after the usual U(-1/sqrt(H), 1/sqrt(H)) init. On
    k-bit parity this is what decides whether training leaves the chance
    plateau (see docs/grid_lstm.md).

    x (B, input_size) -> logits (B, output_size). ``lengths`` is accepted and
    ignored so that the model fits the sequence tasks' call ``model(x, lengths)``.
    """

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 64, depth: int = 6,
                 tied: bool = True, input_activation: str = "identity", init_memory: str = "zeros",
                 input_every_layer: bool = False, forget_bias: float | None = None,
                 init_scale: float = 1.0) -> None:
        super().__init__()
        self.input_size = _check_pos("input_size", input_size)
        self.output_size = _check_pos("output_size", output_size)
        self.hidden_size = _check_pos("hidden_size", hidden_size)
        self.depth = _check_pos("depth", depth)
        self.tied = bool(tied)
        self.input_activation = _check_choice("input_activation", input_activation, tuple(_INPUT_ACTS))
        self.init_memory = _check_choice("init_memory", init_memory, ("zeros", "input"))
        self.input_every_layer = bool(input_every_layer)
        self.proj = nn.Linear(input_size, hidden_size)
        self.mem_proj = nn.Linear(input_size, hidden_size) if init_memory == "input" else None
        self.block = GridLSTM(1, hidden_size, input_size=input_size if input_every_layer else 0,
                              tied=self.tied, grid_size=depth, forget_bias=forget_bias)
        self.head = nn.Linear(hidden_size, output_size)
        self.init_scale = scale_parameters_(self, init_scale)

    @staticmethod
    def param_count(input_size: int, output_size: int, hidden_size: int, depth: int = 1, tied: bool = True,
                    init_memory: str = "zeros", input_every_layer: bool = False) -> int:
        """Parameters of a GridLSTM1D with these settings (without building it)."""
        H = hidden_size
        proj = (input_size + 1) * H * (2 if init_memory == "input" else 1)
        block = 4 * H * (H + (input_size if input_every_layer else 0) + 1) * (1 if tied else depth)
        return proj + block + (H + 1) * output_size

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"GridLSTM1D expects x (B, {self.input_size}), got {tuple(x.shape)}")
        h = _INPUT_ACTS[self.input_activation](self.proj(x))  # (B, H)
        m = self.mem_proj(x) if self.mem_proj is not None else torch.zeros_like(h)  # (B, H)
        xin = x if self.input_every_layer else None
        for layer in range(self.depth):
            (h,), (m,) = self.block([h], [m], x=xin, position=(layer,))
        return self.head(h)


class FeedForwardNet(nn.Module):
    """A tanh / ReLU multilayer perceptron with ``depth`` hidden layers.

        h_0 = x;  h_l = a(W_l h_{l-1} + b_l), l = 1..depth;  y = W_out h_depth + b_out

    Give one of ``hidden_size``; ``num_params``, to pick the largest width whose
    parameter count does not exceed it; or ``grid_hidden_size``, to match the
    parameter count of a tied :class:`GridLSTM1D` of that hidden size on the same
    input and output (the parity baselines). ``init_scale`` multiplies every
    initial weight and bias, as in :class:`GridLSTM1D`.
    """

    def __init__(self, input_size: int, output_size: int, depth: int = 6, activation: str = "tanh",
                 hidden_size: int | None = None, num_params: int | None = None,
                 grid_hidden_size: int | None = None, init_scale: float = 1.0) -> None:
        super().__init__()
        self.input_size = _check_pos("input_size", input_size)
        self.output_size = _check_pos("output_size", output_size)
        self.depth = _check_pos("depth", depth)
        self.activation = _check_choice("activation", activation, ("tanh", "relu"))
        if sum(v is not None for v in (hidden_size, num_params, grid_hidden_size)) != 1:
            raise ValueError("FeedForwardNet: give exactly one of hidden_size, num_params and grid_hidden_size")
        if grid_hidden_size is not None:
            num_params = GridLSTM1D.param_count(input_size, output_size,
                                                _check_pos("grid_hidden_size", grid_hidden_size))
        if num_params is not None:
            hidden_size = self.width_for_params(_check_pos("num_params", num_params), input_size, output_size, depth)
        self.hidden_size = _check_pos("hidden_size", hidden_size)
        sizes = [input_size] + [self.hidden_size] * depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(self.hidden_size, output_size)
        self.init_scale = scale_parameters_(self, init_scale)

    @staticmethod
    def param_count(width: int, input_size: int, output_size: int, depth: int) -> int:
        return (input_size + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * output_size

    @classmethod
    def width_for_params(cls, num_params: int, input_size: int, output_size: int, depth: int) -> int:
        # solve (d-1) w^2 + (I + 1 + (d-1) + O) w + O = P for w, then step down to fit
        a = depth - 1
        b = input_size + 1 + (depth - 1) + output_size
        c = output_size - num_params
        w = int(-c / b) if a == 0 else int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))
        w = max(w, 1)
        while w > 1 and cls.param_count(w, input_size, output_size, depth) > num_params:
            w -= 1
        while cls.param_count(w + 1, input_size, output_size, depth) <= num_params:
            w += 1
        return w

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"FeedForwardNet expects x (B, {self.input_size}), got {tuple(x.shape)}")
        act = torch.tanh if self.activation == "tanh" else torch.relu
        h = x
        for layer in self.layers:
            h = act(layer(h))
        return self.head(h)


# ======================================================================================
class GridLSTM2D(nn.Module):
    r"""2-D Grid LSTM over time x depth, called like a stacked nn.LSTM.

    Block (t, l) (dimension 0 = time, 1 = depth) receives h^time, m^time from
    (t-1, l) and h^depth, m^depth from (t, l-1):

        (h^time_{t,l}, m^time_{t,l}), (h^depth_{t,l}, m^depth_{t,l})
            = GridLSTM([h^time_{t-1,l}; h^depth_{t,l-1}], m^time_{t-1,l}, m^depth_{t,l-1})

    The input enters as the depth hidden vector of layer 0, h^depth_{t,0} =
    W_in x_t + b_in (a non-LSTM projection), m^depth_{t,0} = 0; the output at
    step t is h^depth_{t,L} of the top layer. ``priority="depth"`` (default)
    computes the depth LSTM after the time LSTM (it reads h^time_{t,l});
    "time" the other way round; None: both from the old vectors. Weights are
    tied along time always and along depth when ``tied=True``.

    ``forward(x, state=None, lengths=None)``: x (B, T, I) if batch_first else
    (T, B, I); returns ``out`` (B, T, H) and ``state = (h, m)``, each (L, B, H),
    the temporal hidden/memory vectors of every layer after each sequence's last
    true step (like nn.LSTM's (h_n, c_n)). Outputs past a sequence's length are zero.
    """

    def __init__(self, input_size: int, hidden_size: int = 128, num_layers: int = 2, tied: bool = False,
                 priority: str | None = "depth", batch_first: bool = True,
                 forget_bias: float | None = None) -> None:
        super().__init__()
        self.input_size = _check_pos("input_size", input_size)
        self.hidden_size = _check_pos("hidden_size", hidden_size)
        self.num_layers = _check_pos("num_layers", num_layers)
        if priority not in ("depth", "time", None):
            raise ValueError(f"unknown priority {priority!r}; valid choices: 'depth', 'time', None")
        self.priority = priority
        self.tied = bool(tied)
        self.batch_first = bool(batch_first)
        self.proj = nn.Linear(input_size, hidden_size)
        prio = {"depth": (1,), "time": (0,), None: ()}[priority]
        self.block = GridLSTM(2, hidden_size, priority=prio, tied=(True, self.tied),
                              grid_size=(None, num_layers), forget_bias=forget_bias)

    num_states = 2

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None,
                lengths: Tensor | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"GridLSTM2D expects x with {self.input_size} features, (B, T, I) or (T, B, I); "
                             f"got {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)  # (T, B, I)
        T, B, _ = x.shape
        L, H = self.num_layers, self.hidden_size
        if state is None:
            h_t = [x.new_zeros(B, H) for _ in range(L)]
            m_t = [x.new_zeros(B, H) for _ in range(L)]
        else:
            h0, c0 = state
            if h0.shape != (L, B, H) or c0.shape != (L, B, H):
                raise ValueError(f"state tensors must be ({L}, {B}, {H}), got {tuple(h0.shape)}, {tuple(c0.shape)}")
            h_t, m_t = list(h0.unbind(0)), list(c0.unbind(0))
        mask = None
        if lengths is not None:
            lengths = lengths.to(x.device)
            if lengths.shape != (B,) or int(lengths.max()) > T or int(lengths.min()) < 1:
                raise ValueError(f"lengths must be (B,) with values in [1, {T}], got {lengths.tolist()}")
            mask = (torch.arange(T, device=x.device)[:, None] < lengths[None, :]).unsqueeze(-1)  # (T, B, 1)
        xin = self.proj(x)  # (T, B, H), all steps at once
        zeros = x.new_zeros(B, H)
        outs = []
        for t in range(T):
            hd, md = xin[t], zeros
            for layer in range(L):
                (ht, hd), (mt, md) = self.block([h_t[layer], hd], [m_t[layer], md], position=(t, layer))
                if mask is not None:
                    ht = torch.where(mask[t], ht, h_t[layer])
                    mt = torch.where(mask[t], mt, m_t[layer])
                h_t[layer], m_t[layer] = ht, mt
            outs.append(hd if mask is None else hd * mask[t])
        out = torch.stack(outs, 0)  # (T, B, H)
        if self.batch_first:
            out = out.transpose(0, 1)
        return out, (torch.stack(h_t, 0), torch.stack(m_t, 0))


class GridSequenceModel(nn.Module):
    """A 2-D Grid LSTM with a linear head; the interface of ``SequenceModel``.

    readout "last": y = W out_{len_b} + b (B, O); "all": y_t = W out_t + b (B, T, O).
    ``embedding``: with ``vocab_size`` set, x holds token ids (B, T) and is embedded first.
    """

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 128, num_layers: int = 2,
                 tied: bool = False, priority: str | None = "depth", readout: str = "last",
                 forget_bias: float | None = None) -> None:
        super().__init__()
        self.readout = _check_choice("readout", readout, ("last", "all"))
        self.input_size = _check_pos("input_size", input_size)
        self.output_size = _check_pos("output_size", output_size)
        self.rnn = GridLSTM2D(input_size, hidden_size, num_layers, tied=tied, priority=priority,
                              batch_first=True, forget_bias=forget_bias)
        self.head = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        out, _ = self.rnn(x, lengths=lengths)  # (B, T, H)
        if self.readout == "all":
            return self.head(out)
        B, T, _ = out.shape
        last = (torch.full((B,), T - 1, device=out.device, dtype=torch.long) if lengths is None
                else lengths.to(out.device).long() - 1)
        return self.head(out[torch.arange(B, device=out.device), last])


# ======================================================================================
class GridLSTM3D(nn.Module):
    r"""3-D Grid LSTM over image rows x columns x depth: a pixel/patch classifier.

    The image (B, C, Hgt, Wid) is cut into non-overlapping ``patch_size`` patches,
    giving a grid of R x S positions, each with a patch vector p_{r,s} of
    C * patch_size^2 values. Block (r, s, l) (dimensions 0 = rows, 1 = columns,
    2 = depth) reads h^row, m^row from (r-1, s, l), h^col, m^col from (r, s-1, l)
    and h^depth, m^depth from (r, s, l-1):

        h^depth_{r,s,0} = W_in p_{r,s} + b_in,  m^depth_{r,s,0} = 0
        (h'^row, h'^col, h'^depth), (m'^row, m'^col, m'^depth) = GridLSTM(H, m)   at (r, s, l)
        y = W_out mean_{r,s} h^depth_{r,s,L} + b_out                       # (B, classes)

    Rows and columns are tied (one block for all positions, like a
    convolution); depth is tied when ``tied=True``. The depth dimension has
    priority by default (it reads the new row/column vectors). Blocks on one
    anti-diagonal r + s = const do not depend on each other and are computed
    together (a wavefront), in R + S - 1 sequential steps per layer.

    x (B, C, Hgt, Wid) (or (B, Hgt, Wid) for one channel) -> logits (B, num_classes).
    """

    def __init__(self, image_size: int | tuple[int, int], num_classes: int, channels: int = 1,
                 patch_size: int = 2, hidden_size: int = 32, depth: int = 2, tied: bool = False,
                 priority_depth: bool = True, forget_bias: float | None = None) -> None:
        super().__init__()
        hgt, wid = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.image_size = (_check_pos("image height", hgt), _check_pos("image width", wid))
        self.num_classes = self.output_size = _check_pos("num_classes", num_classes)
        self.channels = _check_pos("channels", channels)
        self.patch_size = _check_pos("patch_size", patch_size)
        if hgt % patch_size or wid % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide the image size {self.image_size}")
        self.hidden_size = _check_pos("hidden_size", hidden_size)
        self.depth = _check_pos("depth", depth)
        self.rows, self.cols = hgt // patch_size, wid // patch_size
        self.proj = nn.Linear(channels * patch_size * patch_size, hidden_size)
        self.block = GridLSTM(3, hidden_size, priority=(2,) if priority_depth else (),
                              tied=(True, True, bool(tied)), grid_size=(None, None, depth),
                              forget_bias=forget_bias)
        self.head = nn.Linear(hidden_size, num_classes)

    def patches(self, x: Tensor) -> Tensor:
        """(B, C, Hgt, Wid) -> (B, R, S, C*p*p)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != self.channels or tuple(x.shape[2:]) != self.image_size:
            raise ValueError(f"GridLSTM3D expects images (B, {self.channels}, {self.image_size[0]}, "
                             f"{self.image_size[1]}), got {tuple(x.shape)}")
        p = self.patch_size
        B, C = x.shape[:2]
        x = x.reshape(B, C, self.rows, p, self.cols, p).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(B, self.rows, self.cols, C * p * p)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        pv = self.proj(self.patches(x))  # (B, R, S, H)
        B, R, S, H = pv.shape
        zeros = pv.new_zeros(B, H)
        # depth inputs of layer 0: the projected patches
        hd = {(r, s): pv[:, r, s] for r in range(R) for s in range(S)}
        md = {(r, s): zeros for r in range(R) for s in range(S)}
        for layer in range(self.depth):
            hr: dict = {}
            mr: dict = {}
            hc: dict = {}
            mc: dict = {}
            for diag in range(R + S - 1):
                cells = [(r, diag - r) for r in range(max(0, diag - S + 1), min(R, diag + 1))]

                def gather(store, offset):
                    return torch.cat([store.get((r + offset[0], s + offset[1]), zeros) for r, s in cells], 0)

                h_in = [gather(hr, (-1, 0)), gather(hc, (0, -1)), torch.cat([hd[c] for c in cells], 0)]
                m_in = [gather(mr, (-1, 0)), gather(mc, (0, -1)), torch.cat([md[c] for c in cells], 0)]
                h_out, m_out = self.block(h_in, m_in, position=(0, 0, layer))  # each (n*B, H)
                hs = [t.split(B, 0) for t in h_out]
                ms = [t.split(B, 0) for t in m_out]  # type: ignore[union-attr]
                for j, c in enumerate(cells):
                    hr[c], hc[c], hd[c] = hs[0][j], hs[1][j], hs[2][j]
                    mr[c], mc[c], md[c] = ms[0][j], ms[1][j], ms[2][j]
        top = torch.stack([hd[(r, s)] for r in range(R) for s in range(S)], 1)  # (B, R*S, H)
        return self.head(top.mean(1))


# ======================================================================================
# 2-D Grid LSTM in the character-level and music models: same interface, Grid recurrence.
def _grid_instead_of_recurrent(model: nn.Module, input_size: int, hidden_size: int, num_layers: int, cell: str,
                               cell_kwargs, tied: bool, priority: str | None, forget_bias: float | None) -> None:
    if cell != "lstm" or dict(cell_kwargs or {}):
        raise ValueError(f"{type(model).__name__}: a Grid LSTM is made of LSTM blocks; cell must be 'lstm' with no "
                         f"cell_kwargs, got cell={cell!r}, cell_kwargs={dict(cell_kwargs or {})}")
    model.rnn = GridLSTM2D(input_size, hidden_size, num_layers, tied=tied, priority=priority, batch_first=True,
                           forget_bias=forget_bias)


class GridCharLM(CharLM):
    """``CharLM`` (embedding, recurrence, dropout, head; state carried across TBPTT chunks)
    with a 2-D Grid LSTM (time x depth) as the recurrence. State: (h, m), each (L, B, H).
    ``dropout`` acts on the output only (the Grid has no dropout between layers)."""

    def __init__(self, vocab_size: int, embedding_size: int = 64, hidden_size: int = 256, num_layers: int = 2,
                 dropout: float = 0.0, tied: bool = False, priority: str | None = "depth",
                 forget_bias: float | None = None, cell: str = "lstm", cell_kwargs=None,
                 impl: str = "auto") -> None:
        super().__init__(vocab_size, cell="lstm", embedding_size=embedding_size, hidden_size=hidden_size,
                         num_layers=1, dropout=dropout)
        _grid_instead_of_recurrent(self, embedding_size, hidden_size, num_layers, cell, cell_kwargs, tied,
                                   priority, forget_bias)
        self.config.update({"num_layers": int(num_layers), "tied": bool(tied), "priority": priority,
                            "forget_bias": forget_bias})
        self.config.pop("impl", None)


class GridDensityModel(DensityModel):
    """``DensityModel`` (music: per-step Bernoulli outputs) with a 2-D Grid LSTM recurrence."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int = 36, num_layers: int = 2,
                 dropout: float = 0.0, input_noise: float = 0.0, tied: bool = False,
                 priority: str | None = "depth", forget_bias: float | None = None, cell: str = "lstm",
                 cell_kwargs=None, impl: str = "auto") -> None:
        super().__init__(input_size, output_size, cell="lstm", hidden_size=hidden_size, num_layers=1,
                         dropout=dropout, input_noise=input_noise)
        _grid_instead_of_recurrent(self, input_size, hidden_size, num_layers, cell, cell_kwargs, tied, priority,
                                   forget_bias)
