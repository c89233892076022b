"""Recurrent.recording(): the recorded gates are the cells' equations, recording changes
nothing, and with recording off the fast kernels run."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import linear

from recur_attn.layers import Recurrent
from recur_attn.layers.fast import native

torch.set_num_threads(1)
B, T, I, H = 3, 6, 4, 5


def _prev(seq: torch.Tensor) -> torch.Tensor:
    """(B, T, H) -> the value at t-1 (zeros at t = 0)."""
    return torch.cat([torch.zeros_like(seq[:, :1]), seq[:, :-1]], 1)


def _blocks(w: torch.Tensor, n: int) -> list[torch.Tensor]:
    return list(w.split(w.shape[0] // n, dim=0))


def _rnn(cell, **kw) -> Recurrent:
    torch.manual_seed(0)
    rnn = Recurrent(cell, I, H, batch_first=True, **kw).double()
    with torch.no_grad():  # random, non-trivial parameters everywhere (biases included)
        for p in rnn.parameters():
            p.uniform_(-0.8, 0.8)
    return rnn


def test_vanilla_lstm_with_peepholes_gates_match_equations():
    rnn = _rnn("vanilla")
    x = torch.randn(B, T, I, dtype=torch.double)
    with rnn.recording() as recs:
        out, (hn, cn) = rnn(x)
    (rec,) = recs
    assert rec["layer"] == 0 and rec["direction"] == 0
    for k in ("i", "f", "g", "o", "h", "c"):
        assert rec[k].shape == (B, T, H)
    W = dict(zip("ifgo", _blocks(rnn.weight_ih_l0, 4)))
    R = dict(zip("ifgo", _blocks(rnn.weight_hh_l0, 4)))
    bi = dict(zip("ifgo", rnn.bias_ih_l0.split(H)))
    bh = dict(zip("ifgo", rnn.bias_hh_l0.split(H)))
    p_i, p_f, p_o = rnn.weight_ph_l0  # peepholes
    h_prev, c_prev = _prev(rec["h"]), _prev(rec["c"])

    def pre(k):
        return linear(x, W[k], bi[k]) + linear(h_prev, R[k], bh[k])

    i = torch.sigmoid(pre("i") + p_i * c_prev)
    f = torch.sigmoid(pre("f") + p_f * c_prev)
    g = torch.tanh(pre("g"))
    c = f * c_prev + i * g
    o = torch.sigmoid(pre("o") + p_o * c)  # the output gate peeks at c_t
    h = o * torch.tanh(c)
    for name, ref in (("i", i), ("f", f), ("g", g), ("o", o), ("c", c), ("h", h)):
        torch.testing.assert_close(rec[name], ref, msg=f"gate {name}")
    torch.testing.assert_close(rec["h"], out)
    torch.testing.assert_close(rec["c"][:, -1], cn[0])


def test_cifg_records_its_coupled_forget_gate():
    rnn = _rnn("cifg")
    with rnn.recording() as recs:
        rnn(torch.randn(B, T, I, dtype=torch.double))
    torch.testing.assert_close(recs[0]["f"], 1.0 - recs[0]["i"])


def test_gru_bidirectional_with_lengths_gates_match_equations():
    """Both directions, padded batch: the reverse direction's records are in time order."""
    rnn = _rnn("gru", bidirectional=True)
    x = torch.randn(B, T, I, dtype=torch.double)
    lengths = torch.tensor([T, 4, 2])
    with rnn.recording() as recs:
        out, hn = rnn(x, lengths=lengths)
    assert [(r["layer"], r["direction"]) for r in recs] == [(0, 0), (0, 1)]
    inside = (torch.arange(T)[None, :] < lengths[:, None]).double()[..., None]  # (B, T, 1)
    for rec in recs:
        d = rec["direction"]
        sfx = "_l0" + ("_reverse" if d else "")
        Wr, Wz, Wn = _blocks(getattr(rnn, "weight_ih" + sfx), 3)
        Rr, Rz, Rn = _blocks(getattr(rnn, "weight_hh" + sfx), 3)
        bir, biz, bin_ = getattr(rnn, "bias_ih" + sfx).split(H)
        bhr, bhz, bhn = getattr(rnn, "bias_hh" + sfx).split(H)
        hs = rec["h"]
        if d == 0:
            h_prev = _prev(hs)
        else:  # the previous step of the backward direction is t + 1 (zero at each true end)
            h_prev = torch.cat([hs[:, 1:], torch.zeros_like(hs[:, :1])], 1)
        r = torch.sigmoid(linear(x, Wr, bir) + linear(h_prev, Rr, bhr))
        z = torch.sigmoid(linear(x, Wz, biz) + linear(h_prev, Rz, bhz))
        n = torch.tanh(linear(x, Wn, bin_) + r * linear(h_prev, Rn, bhn))
        h = (1 - z) * n + z * h_prev
        for name, ref in (("r", r), ("z", z), ("n", n), ("h", h)):
            torch.testing.assert_close(rec[name], ref * inside, msg=f"direction {d} gate {name}")
        torch.testing.assert_close(hs, out[..., d * H:(d + 1) * H])


def test_dglstm_depth_gate_matches_equations():
    torch.manual_seed(1)
    rnn = Recurrent("dglstm", I, H, num_layers=2, batch_first=True).double()
    with torch.no_grad():
        for p in rnn.parameters():
            p.uniform_(-0.8, 0.8)
    x = torch.randn(B, T, I, dtype=torch.double)
    with rnn.recording() as recs:
        out, _ = rnn(x)
    low, top = recs
    assert "d" not in low and set("ifgod") <= set(top)
    x1, c_below = low["h"], low["c"]  # the second layer's input and the lower memory
    W = _blocks(rnn.weight_ih_l1, 5)
    R = _blocks(rnn.weight_hh_l1, 4)
    bi = rnn.bias_ih_l1.split(H)
    bh = rnn.bias_hh_l1.split(H)
    h_prev, c_prev = _prev(top["h"]), _prev(top["c"])
    a = [linear(x1, W[k], bi[k]) + linear(h_prev, R[k], bh[k]) for k in range(4)]
    i, f, g, o = torch.sigmoid(a[0]), torch.sigmoid(a[1]), torch.tanh(a[2]), torch.sigmoid(a[3])
    d = torch.sigmoid(linear(x1, W[4], bi[4]) + rnn.weight_cd_l1 * c_prev + rnn.weight_ld_l1 * c_below)
    c = f * c_prev + i * g + d * c_below
    h = o * torch.tanh(c)
    for name, ref in (("i", i), ("f", f), ("g", g), ("o", o), ("d", d), ("c", c), ("h", h)):
        torch.testing.assert_close(top[name], ref, msg=f"gate {name}")
    torch.testing.assert_close(top["h"], out)


def test_clockwork_records_which_modules_ticked():
    rnn = Recurrent("clockwork", I, 8, batch_first=True, num_modules=4)  # periods 1, 2, 4, 8
    with rnn.recording() as recs:
        rnn(torch.randn(2, 9, I))
    tick = recs[0]["tick"][0]  # (T, H)
    period = torch.tensor([1, 2, 4, 8]).repeat_interleave(2)
    expected = (torch.arange(9)[:, None] % period[None, :] == 0).float()
    torch.testing.assert_close(tick, expected)


@pytest.mark.parametrize("cell", ["lstm", "vanilla", "gru", "rnn_tanh"])
def test_recording_leaves_outputs_and_gradients_unchanged(cell):
    torch.manual_seed(2)
    rnn = Recurrent(cell, I, H, num_layers=2, batch_first=True)
    x = torch.randn(B, T, I)
    lengths = torch.tensor([T, 3, 5])

    def run(record: bool):
        rnn.zero_grad()
        if record:
            with rnn.recording() as recs:
                out, state = rnn(x, lengths=lengths)
            assert len(recs) == 2
        else:
            out, state = rnn(x, lengths=lengths)
        state = state if isinstance(state, tuple) else (state,)
        (out.pow(2).sum() + sum(s.sin().sum() for s in state)).backward()
        return out.detach(), [s.detach() for s in state], {n: p.grad.clone() for n, p in rnn.named_parameters()}

    out0, st0, g0 = run(False)
    out1, st1, g1 = run(True)
    torch.testing.assert_close(out1, out0, rtol=1e-5, atol=1e-6)
    for a, b in zip(st1, st0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], rtol=1e-4, atol=1e-6, msg=f"grad of {n}")


@pytest.mark.parametrize("cell", ["gru", "lstm", "gru_cho"])
def test_fast_path_when_not_recording(monkeypatch, cell):
    rnn = Recurrent(cell, I, H, batch_first=True)
    fast = rnn.active_impl  # the fused kernel (lstm, gru: torch's without the C++ kernels)
    assert fast == ("fused" if cell == "gru_cho" or native.state() == "on" else "torch")
    with rnn.recording():
        assert rnn.active_impl == "reference"
    assert rnn.active_impl == fast

    def boom(*a, **k):
        raise AssertionError("the reference path ran although recording is off")

    monkeypatch.setattr(Recurrent, "_forward_reference", boom)
    out, _ = rnn(torch.randn(B, T, I))  # a fast kernel: the reference path is not touched
    assert out.shape == (B, T, H)
    with pytest.raises(AssertionError, match="reference path ran"):
        with rnn.recording():
            rnn(torch.randn(B, T, I))


def test_recording_blocks_do_not_nest():
    rnn = Recurrent("gru", I, H)
    with rnn.recording():
        with pytest.raises(RuntimeError, match="nested"):
            with rnn.recording():
                pass
