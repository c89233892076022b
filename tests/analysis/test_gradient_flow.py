"""gradient_flow: dL/dh_t and dL/dc_t equal autograd's on an explicit step-by-step loop."""

from __future__ import annotations

import pytest
import torch

from recur_attn.analysis import find_recurrent, gradient_flow, probe_states
from recur_attn.analysis.figures import informative_units, marker_jump_ratio
from recur_attn.layers import Recurrent
from recur_attn.models import SequenceModel

torch.set_num_threads(1)
B, T, I, H = 3, 7, 2, 5


def _explicit_grads(rnn: Recurrent, head: torch.nn.Linear, x, y):
    """Run the layers by hand, step by step, retain_grad on every h_t and c_t."""
    L = rnn.num_layers
    states = [rnn.cells[k].init_state(B, x.dtype, x.device) for k in range(L)]
    hs = [[] for _ in range(L)]
    cs = [[] for _ in range(L)]
    xw0 = rnn.cells[0].input_projection(rnn.cell_params(0), x)  # (B, T, G*H)
    for t in range(T):
        inp_w = xw0[:, t]
        for k in range(L):
            cell, p = rnn.cells[k], rnn.cell_params(k)
            if k > 0:
                inp_w = cell.input_projection(p, hs[k - 1][t])
            below = cs[k - 1][t] if (cell.depth_gated and k > 0) else None
            h, states[k] = cell.step(p, inp_w, states[k], t, below)
            h.retain_grad()
            hs[k].append(h)
            if len(states[k]) > 1:
                states[k][1].retain_grad()
                cs[k].append(states[k][1])
    loss = ((head(hs[-1][-1]).squeeze(-1) - y) ** 2).mean()
    loss.backward()
    out = []
    for k in range(L):
        rec = {"h": torch.stack([h.grad for h in hs[k]], 1)}
        if cs[k]:
            rec["c"] = torch.stack([c.grad for c in cs[k]], 1)
        out.append(rec)
    return loss, out


@pytest.mark.parametrize("cell", ["lstm", "vanilla", "gru", "rnn_tanh", "dglstm"])
def test_gradients_match_explicit_autograd_loop(cell):
    torch.manual_seed(0)
    rnn = Recurrent(cell, I, H, num_layers=2, batch_first=True).double()
    head = torch.nn.Linear(H, 1).double()
    x = torch.randn(B, T, I, dtype=torch.double)
    y = torch.randn(B, dtype=torch.double)

    def loss_fn():
        out, _ = rnn(x)
        return ((head(out[:, -1]).squeeze(-1) - y) ** 2).mean()

    flow = gradient_flow(rnn, loss_fn)
    ref_loss, ref = _explicit_grads(rnn, head, x, y)
    assert flow.loss == pytest.approx(float(ref_loss.detach()))
    assert [(g["layer"], g["direction"]) for g in flow.grads] == [(0, 0), (1, 0)]
    for k in range(2):
        for name in ref[k]:
            torch.testing.assert_close(flow.grads[k][name], ref[k][name], msg=f"layer {k} dL/d{name}")
            norms = torch.linalg.vector_norm(ref[k][name], dim=-1)  # (B, T)
            torch.testing.assert_close(flow.layers[k][name].double(), norms)
        assert ("c" in flow.grads[k]) == (cell in ("lstm", "vanilla", "dglstm"))
    torch.testing.assert_close(flow.curve("h").double(), torch.linalg.vector_norm(ref[1]["h"], dim=-1).mean(0))
    # the gradient reaches the first step, and is largest near the loss for a random tanh RNN
    assert (flow.layers[1]["h"][:, 0] > 0).all()
    # the gate records of the same forward come back
    assert len(flow.records) == 2 and flow.records[1]["h"].shape == (B, T, H)


def test_probe_changes_nothing_and_cleans_up():
    torch.manual_seed(1)
    model = SequenceModel(I, 1, cell="lstm", hidden_size=H)
    x = torch.randn(B, T, I)
    ref = model(x)
    rnn = find_recurrent(model)
    for p in model.parameters():
        p.grad = None
    with probe_states(rnn) as probe:
        out = model(x)
        grads = probe.gradients(out.sum())
    torch.testing.assert_close(out, ref)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad: .grad untouched
    assert all("step" not in c.__dict__ for c in rnn.cells)  # the cells' own step is back
    assert rnn.active_impl != "reference"  # recording (reference path) only inside the block
    assert grads[0]["h"].shape == (B, T, H) and grads[0]["c"].shape == (B, T, H)


def test_bidirectional_with_lengths_zero_past_end_and_time_aligned():
    torch.manual_seed(2)
    rnn = Recurrent("gru", I, H, bidirectional=True, batch_first=True).double()
    x = torch.randn(B, T, I, dtype=torch.double)
    lengths = torch.tensor([T, 4, 2])
    flow = gradient_flow(rnn, lambda: rnn(x, lengths=lengths)[0][:, 0].sum())  # loss read at t = 0
    fwd, bwd = flow.layers
    for b, n in enumerate(lengths.tolist()):
        assert (fwd["h"][b, n:] == 0).all() and (bwd["h"][b, n:] == 0).all()
    # the loss reads the backward direction's output at t = 0, which is its *last* step:
    # its gradient there is the largest one (as for the forward direction's last step).
    assert (bwd["h"][:, 0] >= bwd["h"][:, 1]).all()
    # the backward direction equals a forward run of its cell over the reversed sequence:
    # measure that one independently and compare, step t <-> T-1-t (example 0 has full length)
    uni = Recurrent("gru", I, H, batch_first=True).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(uni, name + "_l0").copy_(getattr(rnn, name + "_l0_reverse"))
    ref = gradient_flow(uni, lambda: uni(x[:1].flip(1))[0][:, -1].sum())
    torch.testing.assert_close(flow.grads[1]["h"][0], ref.grads[0]["h"][0].flip(0))


def test_no_grad_is_refused():
    rnn = Recurrent("lstm", I, H)
    with torch.no_grad(), probe_states(rnn):
        with pytest.raises(RuntimeError, match="gradients are off"):
            rnn(torch.randn(T, B, I))


def test_informative_units_and_marker_jumps():
    """A unit that stores x at the marker and holds it is found by both scores."""
    g = torch.Generator().manual_seed(0)
    n, steps = 64, 20
    xv = torch.rand(n, generator=g)
    pos = torch.randint(2, 10, (n,), generator=g)
    t = torch.arange(steps)[None, :]
    store = (t >= pos[:, None]).double() * xv[:, None].double()  # jumps at the marker, holds
    noise = torch.randn(n, steps, 3, generator=g, dtype=torch.double) * 0.1
    states = torch.cat([noise[..., :2], store[..., None], noise[..., 2:]], -1)  # unit 2 carries it
    units, r = informative_units(states, xv, k=2)
    assert units[0] == 2 and r[2] > 0.99
    jump = marker_jump_ratio(states, t == pos[:, None])
    assert jump.argmax() == 2 and jump[2] > 10 * max(jump[0], jump[1], jump[3])
