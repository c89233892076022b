"""Recurrent: run any cell of the zoo over whole sequences.

Stacked, bidirectional, batch-first or time-major, with an initial state and
variable lengths (a ``lengths`` tensor or a PackedSequence), with nn.LSTM's
calling convention, parameter names and state layout::

    rnn = Recurrent("cifg", input_size=8, hidden_size=16, num_layers=2, batch_first=True)
    out, state = rnn(x)                           # out (B, T, D*H)
    out, state = rnn(x, state, lengths=lengths)   # state at each sequence's true end

Parameters are named like nn.LSTM's (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...,
plus cell-specific extras such as ``weight_ph_l0`` for peepholes), so
``Recurrent("lstm").load_state_dict(nn.LSTM(...).state_dict())`` works strictly.

Implementations (``impl``):
  * ``"reference"``: the generic step-by-step loop over ``cell.step`` -- the
    plain, obviously-correct definition every faster path is checked against.
  * ``"torch"``: torch's own fused kernel (cuDNN on GPU) -- only for ``lstm``,
    ``gru``, ``rnn_tanh`` and ``rnn_relu``, which torch implements, and ``np``
    (Greff's LSTM without peepholes: nn.LSTM's equations exactly).
  * ``"fused"``: the project's whole-sequence kernels (:mod:`.fast`): one GEMM
    for the input projections, one fused recurrent GEMM per step, a
    hand-written backward -- every cell of the zoo (clockwork: periods that
    form a divisibility chain, as the default 2^k).
  * ``"auto"`` (default): the fastest implementation the cell has: "torch"
    for the five cells above (but "fused" for ``rnn_tanh``, ``rnn_relu``,
    ``lstm``, ``np`` and ``gru`` with float32/float64 weights on CPU, outside autocast,
    when the C++ kernels are built: there they are the faster ones,
    ``CPU_FUSED_FIRST``), else "fused" where the cell has a kernel, else
    "reference". On CPU
    a single step (T == 1: sampling a token at a time) runs "torch" for the
    five cells (but "reference" for ``lstm``/``np`` with at most 16 rows) and
    "reference" -- the cell's own step -- for the others: the
    whole-sequence kernels' set-up per call (the recurrent weights reordered
    and packed, O(weights)) is not paid back by one step (see
    ``Recurrent.impl_for``); ``gru``, ``rnn_tanh`` and ``rnn_relu`` keep
    torch's kernel on CPU up to 3 steps of up to 16 rows. Under a torch.func
    transform (grad, jacrev, vmap, ...) "auto" runs "reference", the one
    implementation that supports them all (``in_func_transform``). ``active_impl`` says which one runs for
    sequences, ``impl_for(T, B)`` for a given length and batch.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import Tensor, _VF, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..cells import RecurrentCell, build_cell, check_cell_name
from ..cells.base import check_size
from .fast import forward_fused, native
from .fast import supports as fused_supports
from .fast.common import reverse_padded

#: cells torch runs with its own fused kernels, and the _VF entry for each. Greff's ``np`` (no
#: peepholes) has exactly nn.LSTM's equations and parameter layout, so it runs nn.LSTM's kernel.
TORCH_FUSED = {"lstm": "lstm", "np": "lstm", "gru": "gru", "rnn_tanh": "rnn_tanh", "rnn_relu": "rnn_relu"}
IMPLS = ("auto", "torch", "fused", "reference")
#: cells of TORCH_FUSED whose fused kernel is the faster one on CPU (docs/benchmarks.md): the Elman C++ loop
#: against torch's CPU RNN (0.5-0.6x its time), the LSTM loops against torch's CPU LSTM (training 0.72-1.05x,
#: inference 0.88-1.05x over 6 sizes, and 0.6-0.7x for short calls), the GRU loop against torch's CPU GRU
#: (training 0.27-0.91x, inference 0.39-0.91x over 6 sizes); "auto" runs it there with float32/float64
#: weights, outside autocast, when the C++ kernels are built, and torch's kernel (cuDNN) everywhere else
CPU_FUSED_FIRST = ("rnn_tanh", "rnn_relu", "lstm", "np", "gru")
#: a single step of torch's LSTM (lstm, np) on CPU with at most this many rows runs the cell's step instead
#: (Recurrent.impl_for): 0.4-0.6x torch's time at B = 1-8, 0.70-0.74x at B = 16, 0.94x at B = 32 (session 8;
#: session 5 read 0.95-1.22x at B = 16)
SINGLE_STEP_LSTM_ROWS = 16
#: cells of CPU_FUSED_FIRST whose fused path loses to torch's CPU kernel on short calls (its set-up per call: the
#: recurrent weights packed, ~40 us of Python and small ops), and the calls that keep torch's kernel on CPU: at
#: most SHORT_CALL_STEPS steps of at most SHORT_CALL_ROWS rows (scripts/bench_short.py, session 8: fused
#: 1.0-1.6x torch's time at T = 2-3, B = 1-16; 0.9-1.05x at T = 4, B = 4-16, and from B = 32)
SHORT_CALL_TORCH = ("gru", "rnn_tanh", "rnn_relu")
SHORT_CALL_STEPS, SHORT_CALL_ROWS = 3, 16


def in_func_transform() -> bool:
    """Whether a torch.func transform (grad, vjp, jacrev, jacfwd, vmap, ...) is running. The fused kernels'
    autograd Functions have no functorch rules (setup_context, vmap) and torch's RNN kernels no batching
    rule; the reference step loop runs under every transform, so "auto" takes it there."""
    return torch._C._functorch.peek_interpreter_stack() is not None


class Recurrent(nn.Module):
    """Runs cell ``cell`` over sequences; see the module docstring.

    Args:
        cell: a name in :data:`recur_attn.cells.CELLS`.
        input_size, hidden_size, num_layers, batch_first, dropout, bidirectional:
            as for nn.LSTM (dropout between layers, not after the last one).
        impl: "auto", "fused", "torch" or "reference" (module docstring).
        **cell_kwargs: passed to each layer's cell (e.g. forget_bias, num_modules).
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 impl: str = "auto", **cell_kwargs: Any) -> None:
        super().__init__()
        self.cell_name = check_cell_name(cell)
        self.input_size = check_size("input_size", input_size)
        self.hidden_size = check_size("hidden_size", hidden_size)
        self.num_layers = check_size("num_layers", num_layers)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if impl not in IMPLS:
            raise ValueError(f"unknown impl {impl!r}; valid: {', '.join(IMPLS)}")
        if impl == "torch" and cell not in TORCH_FUSED:
            raise ValueError(f"impl='torch' needs a cell torch implements ({', '.join(TORCH_FUSED)}), got {cell!r}")
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.impl = impl
        self.cell_kwargs = dict(cell_kwargs)

        cells = []
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * self.num_directions
            for direction in range(self.num_directions):
                kwargs = dict(cell_kwargs)
                if cell == "dglstm":
                    kwargs["has_below"] = layer > 0
                c = build_cell(cell, in_size, hidden_size, **kwargs)
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                # The parameters live on the Recurrent under nn.LSTM's names; the
                # cell keeps only its structure (and non-persistent buffers).
                names = []
                for pname, p in list(c._parameters.items()):
                    del c._parameters[pname]
                    self.register_parameter(pname + suffix, p)
                    names.append(pname)
                c._param_names = tuple(names)
                c._param_keys = tuple(n + suffix for n in names)
                c._suffix = suffix
                cells.append(c)
        self.cells = nn.ModuleList(cells)
        self._fused_unsupported = next((r for r in map(fused_supports, cells) if r is not None), None)
        if impl == "fused" and self._fused_unsupported is not None:
            raise ValueError(f"impl='fused' is not available for cell {cell!r}: {self._fused_unsupported}")
        self.state_names = cells[0].state_names
        self._state_sizes = tuple(cells[0].state_sizes())  # (the fgr gate memory is 3H in every layer)
        self._probe = "weight_hh" + cells[0]._suffix  # a parameter every cell has: where the weights are
        self.num_states = len(self.state_names)
        self.output_size = hidden_size * self.num_directions
        self._records: list[dict] | None = None  # set while recording()

    # ------------------------------------------------------------------ helpers
    def cell_params(self, index: int) -> dict[str, Tensor]:
        c = self.cells[index]
        ps = self._parameters  # (a parametrized weight is not in there: getattr computes it)
        return {n: ps[k] if k in ps else getattr(self, k) for n, k in zip(c._param_names, c._param_keys)}

    def reset_parameters(self) -> None:
        for k, c in enumerate(self.cells):
            c.init_params(self.cell_params(k))

    @property
    def uses_torch_kernel(self) -> bool:
        if self._records is not None or self.cell_name not in TORCH_FUSED:
            return False
        return self.impl == "torch" or (self.impl == "auto" and not self._fused_first() and not in_func_transform())

    def _fused_first(self) -> bool:
        """Whether "auto" prefers the fused kernel to torch's for this cell where the weights are now."""
        if self.cell_name not in CPU_FUSED_FIRST:
            return False
        w = getattr(self, self._probe)
        return (w.device.type == "cpu" and w.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled("cpu") and native.state() == "on")

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[dict]]:
        """Record gate activations and states of every forward inside the block.

        Yields a list that each forward extends with one dict per (layer,
        direction) -- ``{"layer", "direction", <gate>: (B, T, H) ..., "h": (B, T, H),
        "c": (B, T, H)}`` (time-major when batch_first is False), positions past a
        sequence's length zeroed. Outputs are unchanged; recording runs the
        reference path, so it costs nothing when off.
        """
        if self._records is not None:
            raise RuntimeError("Recurrent.recording() blocks cannot be nested")
        self._records = []
        try:
            yield self._records
        finally:
            self._records = None

    @property
    def active_impl(self) -> str:
        """The implementation the next forward over a sequence (T > 1) will use; ``impl_for`` for one length."""
        if self._records is not None:
            return "reference"
        if self.uses_torch_kernel:
            return "torch"
        return "fused" if self.uses_fused_kernel else "reference"

    def impl_for(self, seq_len: int, batch_size: int = 1, device: torch.device | str | None = None) -> str:
        """The implementation a forward over ``seq_len`` steps of ``batch_size`` rows on ``device`` (default:
        the weights') uses.

        ``active_impl``, except that "auto" runs a single step (T == 1) on CPU with torch's kernel for the
        cells torch implements and with the cell's own step for the others -- and for ``lstm``/``np`` too
        when there are at most ``SINGLE_STEP_LSTM_ROWS`` rows. The whole-sequence kernels spend O(weights)
        per call before their first step (the recurrent weights reordered into their gate order and packed
        into panels), which one step does not pay back: at T == 1, B = 1-16 the fused path took 1.1-2.0x
        the cell's step (about 1.0x at B = 64) and 1.3-2.0x torch's kernel for gru and rnn_tanh; torch's
        CPU LSTM took 1.3-2.4x the cell's step at B = 1-16 (session 8; docs/benchmarks.md, "Single steps
        and short sequences"). From T = 2-4 on the fused path is the faster. ``gru``, ``rnn_tanh`` and ``rnn_relu``, whose fused path
        "auto" prefers on CPU, keep torch's kernel for calls of at most ``SHORT_CALL_STEPS`` steps and
        ``SHORT_CALL_ROWS`` rows, where it is the faster.
        """
        dev = torch.device(device) if device is not None else getattr(self, self._probe).device
        if self._records is None and self.impl == "auto" and dev.type == "cpu" and not in_func_transform():
            if seq_len == 1:
                if self.cell_name in TORCH_FUSED and not (TORCH_FUSED[self.cell_name] == "lstm"
                                                          and batch_size <= SINGLE_STEP_LSTM_ROWS):
                    return "torch"
                return "reference"
            if self.cell_name in SHORT_CALL_TORCH and seq_len <= SHORT_CALL_STEPS and batch_size <= SHORT_CALL_ROWS:
                return "torch"
        return self.active_impl

    @property
    def uses_fused_kernel(self) -> bool:
        if self._records is not None or self.uses_torch_kernel:
            return False
        return self.impl == "fused" or (self.impl == "auto" and self._fused_unsupported is None
                                        and not in_func_transform())

    def extra_repr(self) -> str:
        s = f"{self.cell_name!r}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.cell_kwargs:
            s += f", {self.cell_kwargs}"
        return s + f", impl={self.impl!r}"

    def init_state(self, batch: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, ...]:
        LD = self.num_layers * self.num_directions
        # the state sizes may differ between layers only in the fgr gate memory, which is 3H everywhere
        return tuple(torch.zeros(LD, batch, s, dtype=dtype, device=device) for s in self._state_sizes)

    # ------------------------------------------------------------------ checks
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 3:
            order = "(B, T, F)" if self.batch_first else "(T, B, F)"
            raise ValueError(f"Recurrent({self.cell_name!r}): expected a 3-D input {order}, got shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            order = "B, T" if self.batch_first else "T, B"
            raise ValueError(
                f"Recurrent({self.cell_name!r}): expected input of shape ({order}, {self.input_size}), "
                f"got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"Recurrent({self.cell_name!r}): input must be floating point, got {x.dtype}")

    def _check_placement(self, x: Tensor, state: tuple[Tensor, ...] | None) -> None:
        """Input and state on the parameters' device, in their dtype or (under autocast) in autocast's: every
        implementation needs that (the fused kernels would otherwise cast the weights to the input's dtype,
        the reference and torch's kernels fail deep inside torch)."""
        w = getattr(self, self._probe)
        if x.device != w.device:
            raise ValueError(f"Recurrent({self.cell_name!r}): input is on {x.device} but the parameters are on "
                             f"{w.device}; move one of them (module.to(x.device))")
        ok = (w.dtype, torch.get_autocast_dtype(x.device.type)) if torch.is_autocast_enabled(x.device.type) \
            else (w.dtype,)
        if x.dtype not in ok:
            raise ValueError(f"Recurrent({self.cell_name!r}): input is {x.dtype} but the parameters are "
                             f"{w.dtype}; convert one of them (module.to({x.dtype}) or x.to({w.dtype}))")
        for name, s in zip(self.state_names, state or ()):
            if s.device != x.device or s.dtype not in ok:
                raise ValueError(f"Recurrent({self.cell_name!r}): state {name} is {s.dtype} on {s.device}, the "
                                 f"input {x.dtype} on {x.device}; give the state the input's dtype and device")

    def _check_state(self, state, batch: int) -> tuple[Tensor, ...]:
        if isinstance(state, Tensor):
            state = (state,)
        state = tuple(state)
        if len(state) != self.num_states:
            raise ValueError(
                f"Recurrent({self.cell_name!r}): the state has {self.num_states} tensor(s) "
                f"{self.state_names}, got {len(state)}"
            )
        LD = self.num_layers * self.num_directions
        for name, s, size in zip(self.state_names, state, self._state_sizes):
            if tuple(s.shape) != (LD, batch, size):
                raise ValueError(
                    f"Recurrent({self.cell_name!r}): expected state {name} of shape "
                    f"(num_layers*num_directions={LD}, B={batch}, {size}), got {tuple(s.shape)}"
                )
        return state

    def _check_lengths(self, lengths, batch: int, T: int) -> Tensor:
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != batch:
            raise ValueError(f"lengths must have shape (B={batch},), got {tuple(lengths.shape)}")
        if lengths.is_floating_point():
            raise ValueError(f"lengths must be integers, got {lengths.dtype}")
        lo, hi = (int(lengths.min()), int(lengths.max())) if batch else (1, 1)
        if lo < 1 or hi > T:
            raise ValueError(f"lengths must lie in [1, T={T}], got min {lo}, max {hi}")
        return lengths.long()

    # ------------------------------------------------------------------ forward
    def forward(self, x, state=None, lengths=None):
        """x (B, T, I) if batch_first else (T, B, I), or a PackedSequence.

        Returns (out, state): out (B, T, D*H) (zeros past each length), or a
        PackedSequence when x is one; state as nn.LSTM / nn.GRU return it.
        """
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("give either a PackedSequence or lengths, not both")
            sorted_indices, unsorted_indices = x.sorted_indices, x.unsorted_indices
            x, lengths = pad_packed_sequence(x, batch_first=False)  # (T, B, I), original order
        else:
            self._check_input(x)
            if self.batch_first:
                x = x.transpose(0, 1)  # (T, B, I)
        T, B = x.shape[0], x.shape[1]
        if packed:
            self._check_input(x)
        if T == 0:
            raise ValueError(f"Recurrent({self.cell_name!r}): the input has no time steps (T = 0)")
        if lengths is not None:
            lengths = self._check_lengths(lengths, B, T)
        if state is not None:
            state = self._check_state(state, B)
        self._check_placement(x, state)
        if state is None:
            state = self.init_state(B, x.dtype, x.device)

        if self._records is not None:
            recs: list[dict] = []
            out, new_state = self._forward_reference(x, state, lengths, record=recs)
            for rec in recs:
                for key, val in rec.items():
                    if isinstance(val, Tensor) and self.batch_first:
                        rec[key] = val.transpose(0, 1)
            self._records.extend(recs)
        else:
            impl = self.impl_for(T, B, x.device)
            if B == 0:  # an empty batch: nothing to run (the kernels' buffers would be empty)
                out, new_state = x.new_zeros(T, 0, self.output_size), state
            elif impl == "torch":
                out, new_state = self._forward_torch(x, state, lengths)
            elif impl == "fused":
                if in_func_transform():
                    raise ValueError(
                        f"Recurrent({self.cell_name!r}, impl='fused'): the fused kernels cannot run under a "
                        f"torch.func transform (grad, vjp, jacrev, vmap): they have no functorch rules. "
                        f"impl='auto' runs the cell's step loop there, as impl='reference' does.")
                out, new_state = forward_fused(self, x, state, lengths)
            else:
                out, new_state = self._forward_reference(x, state, lengths)

        if packed:
            out = self._repack(out, lengths, sorted_indices, unsorted_indices)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, (new_state[0] if self.num_states == 1 else new_state)

    @staticmethod
    def _repack(out: Tensor, lengths: Tensor, sorted_indices, unsorted_indices) -> PackedSequence:
        if sorted_indices is None:
            p = pack_padded_sequence(out, lengths.cpu(), enforce_sorted=True)
            return p
        p = pack_padded_sequence(out.index_select(1, sorted_indices), lengths[sorted_indices.cpu()].cpu(),
                                 enforce_sorted=True)
        return PackedSequence(p.data, p.batch_sizes, sorted_indices, unsorted_indices)

    # ------------------------------------------------------------------ torch's kernels
    def _flat_weights(self) -> list[Tensor]:
        out = []
        for k in range(len(self.cells)):
            p = self.cell_params(k)
            out += [p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]]
        return out

    def _forward_torch(self, x: Tensor, state, lengths):
        fn = getattr(_VF, TORCH_FUSED[self.cell_name])
        hx = state if self.num_states > 1 else state[0]
        args = (self._flat_weights(), True, self.num_layers, self.dropout, self.training, self.bidirectional)
        if lengths is None or bool((lengths == x.shape[0]).all()):
            res = fn(x, hx, *args, False)
            return res[0], tuple(res[1:])
        # variable lengths: torch's kernels take a packed batch
        p = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        if isinstance(hx, tuple):
            hx = tuple(h.index_select(1, p.sorted_indices) for h in hx)
        else:
            hx = hx.index_select(1, p.sorted_indices)
        res = fn(p.data, p.batch_sizes, hx, *args)
        out, _ = pad_packed_sequence(
            PackedSequence(res[0], p.batch_sizes, p.sorted_indices, p.unsorted_indices), total_length=x.shape[0]
        )
        return out, tuple(h.index_select(1, p.unsorted_indices) for h in res[1:])

    # ------------------------------------------------------------------ reference
    def _forward_reference(self, x: Tensor, state: tuple[Tensor, ...], lengths, record: list | None = None):
        T = x.shape[0]
        D = self.num_directions
        mask = None
        if lengths is not None and not bool((lengths == T).all()):
            mask = (torch.arange(T, device=x.device)[:, None] < lengths.to(x.device)[None, :])  # (T, B)
            mask = mask.unsqueeze(-1)  # (T, B, 1)
        finals: list[list[Tensor]] = [[] for _ in range(self.num_states)]
        layer_in = x
        below_cells: list[Tensor | None] = [None] * D  # cell states of the layer below, per direction
        for layer in range(self.num_layers):
            outs, cell_seqs = [], []
            for d in range(D):
                k = layer * D + d
                inp = layer_in if d == 0 else reverse_padded(layer_in, lengths)
                s0 = tuple(s[k] for s in state)
                rec = None
                if record is not None:
                    rec = {"layer": layer, "direction": d}
                    record.append(rec)
                out, final, cseq = self._run_direction(
                    self.cells[k], self.cell_params(k), inp, s0, mask, below_cells[d], rec
                )
                if d == 1:
                    out = reverse_padded(out, lengths)
                    if rec is not None:
                        for key, val in rec.items():
                            if isinstance(val, Tensor) and val.dim() == 3:
                                rec[key] = reverse_padded(val, lengths)
                outs.append(out)
                cell_seqs.append(cseq)
                for j, s in enumerate(final):
                    finals[j].append(s)
            layer_out = outs[0] if D == 1 else torch.cat(outs, dim=-1)  # (T, B, D*H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_out = torch.nn.functional.dropout(layer_out, self.dropout, True)
            layer_in = layer_out
            below_cells = cell_seqs
        return layer_in, tuple(torch.stack(f, 0) for f in finals)

    def _run_direction(self, cell: RecurrentCell, p, inp: Tensor, s0, mask, below, record):
        """Run one direction of one layer. inp (T, B, I) in processing order."""
        T = inp.shape[0]
        xw = cell.input_projection(p, inp)  # (T, B, G*H): one GEMM for all steps
        state = s0
        hs, cs = [], []
        steps: dict[str, list[Tensor]] = {}
        want_cells = cell.num_states > 1
        for t in range(T):
            gates = {} if record is not None else None
            h, new = cell.step(p, xw[t], state, t, None if below is None else below[t], gates)
            if mask is not None:
                m = mask[t]  # (B, 1)
                new = tuple(torch.where(m, n, s) for n, s in zip(new, state))
                h = h * m
            state = new
            hs.append(h)
            if want_cells:
                cs.append(state[1])
            if gates is not None:
                for key, val in gates.items():
                    steps.setdefault(key, []).append(val if mask is None else val * mask[t])
        out = torch.stack(hs, 0)  # (T, B, H)
        cseq = torch.stack(cs, 0) if want_cells else None
        if record is not None:
            for key, vals in steps.items():
                record[key] = torch.stack(vals, 0)
            record["h"] = out
            if cseq is not None:
                record["c"] = cseq if mask is None else cseq * mask
        return out, state, cseq
