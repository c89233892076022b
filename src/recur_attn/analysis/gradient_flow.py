"""Gradient flow through time: the norm of dLoss/dh_t and dLoss/dc_t at every step t.

The measurement behind Hochreiter (1991) and Bengio, Simard & Frasconi (1994): how
much of the loss's gradient reaches the state of step t. For a tanh RNN trained on
the adding problem it decays exponentially with the distance from the loss; the
LSTM's cell state (the "constant error carousel") carries it back unchanged.

dL/dh_t here is the *total* derivative -- through the read-out at step t and
through every later step -- not the gradient of the layer's output tensor (which,
for a loss on the last step only, is zero everywhere but at the end). It is
measured exactly with autograd: while :func:`probe_states` is active, each step of
the :class:`~recur_attn.layers.Recurrent` adds a zero tensor ``e_t`` (requiring
grad) to the state it returns::

    h_t <- h_t + e^h_t,   c_t <- c_t + e^c_t        (e = 0: the values are unchanged)

so dL/de^h_t = dL/dh_t. The cell state also reaches the loss through this step's
own h_t = o_t * tanh(c_t), which comes before the perturbation, so::

    dL/dc_t = dL/de^c_t + (dL/dh_t) (dh_t/dc_t)    (the second term a vector-Jacobian
                                                   product through step t's graph only)

The recurrent layer runs its
reference (step-by-step) path meanwhile, in recording mode, so the gate activations
of the same forward come back too.

    rnn = find_recurrent(task)                     # the model's Recurrent
    flow = gradient_flow(rnn, lambda: task.model_step(batch)[0])
    flow.layers[0]["h"]                            # (B, T) per-example norms of dL/dh_t
    flow.curve("h")                                # (T,) mean over the batch, last layer
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from recur_attn.layers import Recurrent
from recur_attn.layers.recurrent import reverse_padded

__all__ = ["StateProbe", "GradientFlow", "probe_states", "gradient_flow", "find_recurrent", "find_recurrents"]


def find_recurrents(module: nn.Module) -> list[tuple[str, Recurrent]]:
    """Every :class:`Recurrent` inside ``module`` (itself included), as (name, module)."""
    return [(name, m) for name, m in module.named_modules() if isinstance(m, Recurrent)]


def find_recurrent(module: nn.Module) -> Recurrent:
    """The one :class:`Recurrent` inside ``module``; ValueError if there is none or several."""
    found = find_recurrents(module)
    if len(found) != 1:
        names = ", ".join(n or "<root>" for n, _ in found) or "none"
        raise ValueError(
            f"{type(module).__name__} has {len(found)} Recurrent layers ({names}); pass the one to inspect"
        )
    return found[0][1]


@dataclass
class StateProbe:
    """Zero perturbations of every state a :class:`Recurrent` produced during one forward.

    ``perts[k][t]`` is the tuple (e^h_t, e^c_t) (e^c only for cells with a memory cell)
    of cell index k = layer * D + direction at processing step t.
    """

    rnn: Recurrent
    perts: list[list[tuple[Tensor, ...]]] = field(default_factory=list)
    raw: list[list[tuple[Tensor, Tensor]]] = field(default_factory=list)  # (h_t, c_t) before perturbation
    lengths: Tensor | None = None
    forwards: int = 0

    def tensors(self) -> list[Tensor]:
        return [e for per_cell in self.perts for step in per_cell for e in step]

    def gradients(self, loss: Tensor, retain_graph: bool = False) -> list[dict]:
        """dLoss/dh_t (and dLoss/dc_t) of every (layer, direction) at every step.

        Returns one dict per (layer, direction): ``{"layer", "direction", "h": (B, T, H),
        "c": (B, T, H) for memory cells}``, batch-first if the Recurrent is, in the
        sequence's own time order (a backward direction's steps are mapped back),
        zeros past each sequence's length. Uses ``torch.autograd.grad``: the
        parameters' ``.grad`` are left alone.
        """
        if self.forwards != 1:
            raise ValueError(f"the probe saw {self.forwards} forward passes of the Recurrent; expected exactly 1")
        if loss.dim() != 0:
            raise ValueError(f"loss must be a scalar, got shape {tuple(loss.shape)}")
        flat = self.tensors()
        memory = any(len(per_cell[0]) > 1 for per_cell in self.perts)
        grads = torch.autograd.grad(loss, flat, retain_graph=retain_graph or memory, allow_unused=True)
        grads = [torch.zeros_like(e) if g is None else g for e, g in zip(flat, grads)]
        out, i = [], 0
        D = self.rnn.num_directions
        for k, per_cell in enumerate(self.perts):
            n_states = len(per_cell[0])
            steps = [list(grads[i + j * n_states:i + (j + 1) * n_states]) for j in range(len(per_cell))]
            i += n_states * len(per_cell)
            if n_states > 1:
                # add the path c_t -> h_t of step t itself (see the module docstring)
                for t, (h_raw, c_raw) in enumerate(self.raw[k]):
                    if not h_raw.requires_grad:
                        continue
                    (local,) = torch.autograd.grad(h_raw, c_raw, grad_outputs=steps[t][0], retain_graph=True,
                                                   allow_unused=True)
                    if local is not None:
                        steps[t][1] = steps[t][1] + local
            rec: dict = {"layer": k // D, "direction": k % D}
            for s, name in enumerate(("h", "c")[:n_states]):
                g = torch.stack([st[s] for st in steps], 0)  # (T, B, H) in processing order
                if k % D == 1:
                    g = reverse_padded(g, self.lengths)
                if self.lengths is not None:
                    T = g.shape[0]
                    inside = torch.arange(T, device=g.device)[:, None] < self.lengths.to(g.device)[None, :]
                    g = g * inside.unsqueeze(-1)
                rec[name] = g.transpose(0, 1) if self.rnn.batch_first else g
            out.append(rec)
        return out


@contextlib.contextmanager
def probe_states(rnn: Recurrent) -> Iterator[StateProbe]:
    """Within the block, every step of ``rnn`` adds a zero tensor requiring grad to its
    h_t (and c_t); see the module docstring. Runs ``rnn`` in recording mode (the
    reference path) unless it already uses that path. Grad mode must be on.
    """
    probe = StateProbe(rnn)
    num_cells = len(rnn.cells)

    def pre_hook(module, args, kwargs):
        if not torch.is_grad_enabled():
            raise RuntimeError("probe_states: gradients are off (torch.no_grad); dL/dh_t cannot be measured")
        if module.active_impl != "reference":
            raise RuntimeError(f"probe_states: the Recurrent would run {module.active_impl!r}, not the reference path")
        probe.forwards += 1
        probe.perts = [[] for _ in range(num_cells)]
        probe.raw = [[] for _ in range(num_cells)]
        x = args[0] if args else kwargs.get("x")
        lengths = kwargs.get("lengths", args[2] if len(args) > 2 else None)
        if isinstance(x, PackedSequence):
            from torch.nn.utils.rnn import pad_packed_sequence

            _, lengths = pad_packed_sequence(x, batch_first=False)
        probe.lengths = None if lengths is None else torch.as_tensor(lengths).long()

    def wrap(k: int, cell):
        step = cell.step  # the bound method of the class

        def probed_step(p, xw, state, t, below=None, record=None):
            h, new = step(p, xw, state, t, below, record)
            if h is not new[0]:
                raise RuntimeError(f"probe_states: cell {cell.name!r} returns an h_t that is not its state[0]")
            n = min(2, len(new))  # h, and c for memory cells (fgr's gate memory is not probed)
            eps = tuple(torch.zeros_like(s, requires_grad=True) for s in new[:n])
            probe.perts[k].append(eps)
            if n > 1:
                probe.raw[k].append((new[0], new[1]))
            new = tuple(s + e for s, e in zip(new[:n], eps)) + tuple(new[n:])
            return new[0], new

        return probed_step

    with contextlib.ExitStack() as stack:
        if rnn.active_impl != "reference":
            stack.enter_context(rnn.recording())
        handle = rnn.register_forward_pre_hook(pre_hook, with_kwargs=True)
        stack.callback(handle.remove)
        for k, cell in enumerate(rnn.cells):
            # an instance attribute shadows the class's step for this cell only
            cell.__dict__["step"] = wrap(k, cell)
            stack.callback(cell.__dict__.pop, "step", None)
        yield probe


@dataclass
class GradientFlow:
    """Result of :func:`gradient_flow`.

    ``layers``: one dict per (layer, direction) ``{"layer", "direction", "h": (B, T),
    "c": (B, T)}`` of per-example L2 norms over the H units (memory cells only for
    "c"), zeros past each sequence's length; ``grads``: the gradients themselves
    (B, T, H); ``loss``: the loss value; ``records``: the gate activations of the same
    forward (as ``Recurrent.recording`` gives them).
    """

    layers: list[dict]
    grads: list[dict]
    loss: float
    records: list[dict]
    lengths: Tensor | None

    def curve(self, state: str = "h", layer: int = -1, direction: int = 0) -> Tensor:
        """(T,) norm of dL/d<state>_t averaged over the examples that reach step t."""
        recs = [r for r in self.layers if r["direction"] == direction]
        rec = recs[layer]
        if state not in rec:
            raise ValueError(f"state {state!r} not measured for this cell; have: h" + (", c" if "c" in rec else ""))
        norms = rec[state]  # (B, T)
        if self.lengths is None:
            return norms.mean(0)
        T = norms.shape[1]
        inside = (torch.arange(T)[None, :] < self.lengths[:, None].cpu()).to(norms.dtype)  # (B, T)
        return (norms * inside).sum(0) / inside.sum(0).clamp(min=1)


def gradient_flow(rnn: Recurrent, loss_fn: Callable[[], Tensor], eval_mode: bool = True) -> GradientFlow:
    """Norms of dLoss/dh_t and dLoss/dc_t for one batch.

    Args:
        rnn: the Recurrent to measure (e.g. ``find_recurrent(model)``).
        loss_fn: runs the forward of the network that contains ``rnn`` on the batch
            (exactly one forward of ``rnn``) and returns the scalar loss.
        eval_mode: run ``rnn`` in eval mode (no dropout between its layers) while
            measuring, restoring its mode afterwards. The rest of the network is
            left as it is: call ``model.eval()`` first for a deterministic measurement.
    """
    was_training = rnn.training
    if eval_mode:
        rnn.eval()
    try:
        with torch.enable_grad():
            with rnn.recording() as records, probe_states(rnn) as probe:
                loss = loss_fn()
                grads = probe.gradients(loss)
    finally:
        rnn.train(was_training)
    layers = []
    for g in grads:
        rec = {"layer": g["layer"], "direction": g["direction"]}
        for name in ("h", "c"):
            if name in g:
                t = g[name] if rnn.batch_first else g[name].transpose(0, 1)  # (B, T, H)
                rec[name] = torch.linalg.vector_norm(t.detach(), dim=-1).cpu()  # (B, T)
        layers.append(rec)
    records = [{k: (v.detach() if isinstance(v, Tensor) else v) for k, v in r.items()} for r in records]
    return GradientFlow(layers=layers, grads=[{k: (v.detach() if isinstance(v, Tensor) else v)
                                                for k, v in g.items()} for g in grads],
                        loss=float(loss.detach()), records=records,
                        lengths=None if probe.lengths is None else probe.lengths.cpu())
