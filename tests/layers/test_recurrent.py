"""Recurrent against torch's own modules, masking, packed input and bad input."""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from recur_attn.cells import CELLS
from recur_attn.layers import Recurrent
from recur_attn.layers.fast import native
from recur_attn.layers.recurrent import CPU_FUSED_FIRST, TORCH_FUSED

TORCH_MODULES = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn_tanh": torch.nn.RNN}


def torch_twin(name, I, H, L, bi):
    torch.manual_seed(1234)
    return TORCH_MODULES[name](I, H, num_layers=L, bidirectional=bi, batch_first=True)


def run_torch(ref, x, lengths, state):
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out, st = ref(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, st


def as_tuple(s):
    return s if isinstance(s, tuple) else (s,)


@pytest.mark.parametrize(
    "name,impl,L,bi",
    [(n, i, L, b) for n, i, L, b in itertools.product(["lstm", "gru"], ["auto", "reference"], [1, 2], [False, True])]
    + [("rnn_tanh", "reference", 2, True), ("rnn_tanh", "auto", 1, False)],
)
def test_matches_torch_module(name, impl, L, bi):
    I, H, B, T = 5, 7, 4, 6
    ref = torch_twin(name, I, H, L, bi)
    rnn = Recurrent(name, I, H, num_layers=L, bidirectional=bi, batch_first=True, impl=impl)
    rnn.load_state_dict(ref.state_dict(), strict=True)
    # auto: torch's kernel, but the fused one for lstm and rnn_tanh on CPU when the C++ kernels are built
    fused_first = name in CPU_FUSED_FIRST and native.state() == "on"
    assert rnn.active_impl == ("reference" if impl == "reference" else "fused" if fused_first else "torch")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, I, generator=g)
    lengths = torch.tensor([6, 2, 4, 5])
    D = 2 if bi else 1
    s0 = tuple(torch.randn(L * D, B, H, generator=g) for _ in range(2 if name == "lstm" else 1))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    o1, st1 = run_torch(ref, x1, lengths, s0 if name == "lstm" else s0[0])
    o2, st2 = rnn(x2, s0 if name == "lstm" else s0[0], lengths=lengths)
    torch.testing.assert_close(o2, o1, atol=1e-5, rtol=0)
    for a, b in zip(as_tuple(st2), as_tuple(st1)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    w = torch.randn_like(o1)
    loss1 = (o1 * w).sum() + sum((s ** 2).sum() for s in as_tuple(st1))
    loss2 = (o2 * w).sum() + sum((s ** 2).sum() for s in as_tuple(st2))
    loss1.backward()
    loss2.backward()
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=0)
    ref_params = dict(ref.named_parameters())
    for n, p in rnn.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[n].grad, atol=1e-5, rtol=0, msg=n)


def test_state_dict_round_trip_both_ways():
    for name, mod in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        rnn = Recurrent(name, 3, 5, num_layers=2, bidirectional=True)
        ref = mod(3, 5, num_layers=2, bidirectional=True)
        assert set(rnn.state_dict()) == set(ref.state_dict())
        ref.load_state_dict(rnn.state_dict(), strict=True)
        for k, v in rnn.state_dict().items():
            assert v.shape == ref.state_dict()[k].shape


def test_extra_parameters_get_their_own_names():
    names = set(dict(Recurrent("vanilla", 3, 4, num_layers=2, bidirectional=True).named_parameters()))
    assert {"weight_ph_l0", "weight_ph_l1_reverse", "weight_ih_l1", "bias_hh_l0_reverse"} <= names
    names = set(dict(Recurrent("dglstm", 3, 4, num_layers=2).named_parameters()))
    assert "weight_ld_l1" in names and "weight_ld_l0" not in names


def test_packed_sequence_in_packed_out():
    ref = torch_twin("lstm", 3, 4, 2, True)
    for impl in ("auto", "reference"):
        rnn = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True, batch_first=True, impl=impl)
        rnn.load_state_dict(ref.state_dict())
        x = torch.randn(3, 5, 3)
        packed = pack_padded_sequence(x, torch.tensor([2, 5, 3]), batch_first=True, enforce_sorted=False)
        o1, (h1, c1) = ref(packed)
        o2, (h2, c2) = rnn(packed)
        assert isinstance(o2, torch.nn.utils.rnn.PackedSequence)
        torch.testing.assert_close(o2.data, o1.data, atol=1e-5, rtol=0)
        assert torch.equal(o2.batch_sizes, o1.batch_sizes)
        torch.testing.assert_close(h2, h1, atol=1e-5, rtol=0)
        torch.testing.assert_close(c2, c1, atol=1e-5, rtol=0)


def cell_kwargs(name):
    return {"num_modules": 2} if name == "clockwork" else {}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_each_sequence_of_a_padded_batch_gives_what_it_gives_alone(name):
    torch.manual_seed(0)
    rnn = Recurrent(name, 3, 4, num_layers=2, bidirectional=True, batch_first=True, **cell_kwargs(name)).double()
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 3, dtype=torch.float64)
    x[1, 2:] = 100.0  # garbage in the padding must not leak
    out, state = rnn(x, lengths=lengths)
    state = as_tuple(state)
    for b, n in enumerate(lengths.tolist()):
        o_b, s_b = rnn(x[b:b + 1, :n])
        torch.testing.assert_close(out[b, :n], o_b[0], atol=1e-10, rtol=0)
        assert torch.all(out[b, n:] == 0)
        for s, sb in zip(state, as_tuple(s_b)):
            torch.testing.assert_close(s[:, b], sb[:, 0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["vanilla", "fgr", "dglstm", "clockwork", "mut2"])
def test_gradcheck_through_the_sequence(name):
    torch.manual_seed(0)
    rnn = Recurrent(name, 2, 2, num_layers=2, bidirectional=True, impl="reference", **cell_kwargs(name)).double()
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2])
    s0 = tuple(s.requires_grad_() for s in rnn.init_state(2, torch.float64, x.device))
    s0 = tuple(torch.randn_like(s).requires_grad_() for s in s0)

    def f(x, *s):
        out, st = rnn(x, s if len(s) > 1 else s[0], lengths=lengths)
        return (out,) + as_tuple(st)

    assert torch.autograd.gradcheck(f, (x, *s0), eps=1e-6, atol=1e-5)


def test_initial_state_is_used():
    rnn = Recurrent("gru_cho", 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    o1, _ = rnn(x)
    o2, _ = rnn(x, torch.randn(2, 2, 4))
    assert not torch.allclose(o1, o2)


def test_dropout_between_layers_only_in_training():
    rnn = Recurrent("vanilla", 3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, 3)
    rnn.train()
    assert not torch.allclose(rnn(x)[0], rnn(x)[0])
    rnn.eval()
    torch.testing.assert_close(rnn(x)[0], rnn(x)[0])


def test_unbatched_shapes_and_batch_first():
    rnn = Recurrent("cifg", 3, 4, num_layers=2, bidirectional=True, batch_first=True)
    out, (h, c) = rnn(torch.randn(2, 7, 3))
    assert out.shape == (2, 7, 8) and h.shape == c.shape == (4, 2, 4)
    out, h = Recurrent("clockwork", 3, 8)(torch.randn(7, 2, 3))
    assert out.shape == (7, 2, 8) and h.shape == (1, 2, 8)


def test_bad_input_messages():
    rnn = Recurrent("lstm", 3, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, T, 3\), got \(2, 5, 4\)"):
        rnn(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="expected a 3-D input"):
        rnn(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"expected state h of shape"):
        rnn(torch.randn(2, 5, 3), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)))
    with pytest.raises(ValueError, match=r"state has 2 tensor"):
        rnn(torch.randn(2, 5, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, T=5\]"):
        rnn(torch.randn(2, 5, 3), lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match="unknown cell 'lsmt'; valid names"):
        Recurrent("lsmt", 3, 4)
    with pytest.raises(ValueError, match="impl='torch' needs a cell torch implements"):
        Recurrent("cifg", 3, 4, impl="torch")
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        Recurrent("lstm", 3, 4, num_layers=0)


# an empty batch runs nothing and returns empty outputs and states for every implementation (the fused
# kernels used to fail deep inside torch on it); no time steps is an error that says so
@pytest.mark.parametrize("impl", ["auto", "reference", "fused"])
@pytest.mark.parametrize("name", ["lstm", "fgr", "gru_cho", "rnn_tanh", "dglstm"])
def test_empty_batch_and_no_steps(name, impl):
    rnn = Recurrent(name, 3, 4, num_layers=2, bidirectional=True, batch_first=True, impl=impl)
    out, state = rnn(torch.randn(0, 5, 3), lengths=torch.zeros(0, dtype=torch.long))
    state = state if isinstance(state, tuple) else (state,)
    assert out.shape == (0, 5, 8) and all(s.shape[:2] == (4, 0) for s in state)
    assert len(state) == rnn.num_states
    with pytest.raises(ValueError, match=r"the input has no time steps \(T = 0\)"):
        rnn(torch.randn(2, 0, 3))


# a parametrized weight (weight norm on W_hh) is not in the module's _parameters: every implementation (the
# fused kernels, torch's) reads the computed weight, and the gradients reach the parametrization's own parameters
@pytest.mark.parametrize("name", ["vanilla", "gru_cho", "rnn_tanh", "lstm"])
def test_parametrized_weights_reach_every_implementation(name):
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    impls = ["reference", "fused"] + (["torch"] if name in TORCH_FUSED else [])
    mods = [Recurrent(name, 3, 8, impl=impl).double() for impl in impls]
    for m in mods:
        weight_norm(m, "weight_hh_l0")
    with torch.no_grad():
        for p in mods[0].parameters():
            p.copy_(torch.randn_like(p))
    for m in mods[1:]:
        m.load_state_dict(mods[0].state_dict())
    assert [m.impl_for(5, 2) for m in mods] == impls
    x = torch.randn(5, 2, 3, dtype=torch.double)
    outs = [m(x)[0] for m in mods]
    grads = [torch.autograd.grad(o.pow(2).sum(), list(m.parameters())) for o, m in zip(outs, mods)]
    for o, g in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(o, outs[0])
        for a, b in zip(g, grads[0]):
            torch.testing.assert_close(a, b)


# torch.func transforms: the fused kernels' autograd Functions have no functorch rules and torch's RNN kernels
# no vmap rule, so "auto" runs the cell's step loop under them (it used to fail with torch's "must override the
# setup_context staticmethod" or "Batching rule not implemented for aten::lstm"); impl="fused" says why not
@pytest.mark.parametrize("name", ["vanilla", "gru_cho", "rnn_tanh", "lstm"])
def test_auto_runs_under_torch_func_transforms(name):
    from torch.func import functional_call, grad, jacrev, vmap

    torch.manual_seed(0)
    ref, auto = Recurrent(name, 3, 4, impl="reference"), Recurrent(name, 3, 4)
    auto.load_state_dict(ref.state_dict())
    assert auto.impl_for(5, 2) in ("fused", "torch")  # outside a transform: a kernel
    x = torch.randn(5, 2, 3)
    jr, ja = (jacrev(lambda xx: m(xx)[0][-1])(x) for m in (ref, auto))
    torch.testing.assert_close(ja, jr)
    gr, ga = (grad(lambda p: functional_call(m, p, (x,))[0].pow(2).sum())(dict(m.named_parameters()))
              for m in (ref, auto))
    for k in gr:
        torch.testing.assert_close(ga[k], gr[k])
    vr, va = (vmap(lambda xx: m(xx.unsqueeze(1))[0].squeeze(1), in_dims=1)(x) for m in (ref, auto))
    torch.testing.assert_close(va, vr)
    seen = []
    grad(lambda xx: seen.append(auto.impl_for(5, 2)) or auto(xx)[0].sum())(x)
    assert seen == ["reference"]
    if name != "lstm":
        fused = Recurrent(name, 3, 4, impl="fused")
        with pytest.raises(ValueError, match=r"impl='fused'\): the fused kernels cannot run under a torch.func"):
            jacrev(lambda xx: fused(xx)[0][-1])(x)


# a dtype mismatch used to run in the input's dtype through the fused kernels (weights cast per call) and
# fail deep inside torch through the reference path and torch's kernel; every implementation now says so
@pytest.mark.parametrize("impl", ["auto", "reference", "fused"])
@pytest.mark.parametrize("name", ["lstm", "vanilla", "gru_cho", "rnn_tanh"])
def test_dtype_mismatch_is_named(name, impl):
    rnn = Recurrent(name, 3, 4, impl=impl)
    with pytest.raises(ValueError, match=r"input is torch.float64 but the parameters are torch.float32"):
        rnn(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"input is on meta but the parameters are on cpu"):
        rnn(torch.randn(5, 2, 3, device="meta"))  # (a CUDA input with the module on CPU alike)
    state = rnn.init_state(2, torch.float64, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"state h is torch.float64 on cpu, the input torch.float32 on cpu"):
        rnn(torch.randn(5, 2, 3), state)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's dtype is allowed under it
        out, _ = rnn(torch.randn(5, 2, 3, dtype=torch.bfloat16), rnn.init_state(2, torch.float32, "cpu"))
        assert out.shape == (5, 2, 4)
        with pytest.raises(ValueError, match=r"input is torch.float64"):
            rnn(torch.randn(5, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["lstm", "cifg", "gru", "dglstm", "clockwork"])
def test_recording_keeps_outputs_and_records_gates(name):
    torch.manual_seed(0)
    rnn = Recurrent(name, 3, 4, num_layers=2, bidirectional=True, batch_first=True, **cell_kwargs(name))
    x = torch.randn(2, 5, 3)
    lengths = torch.tensor([5, 3])
    out, state = rnn(x, lengths=lengths)
    with rnn.recording() as recs:
        assert rnn.active_impl == "reference"
        out2, state2 = rnn(x, lengths=lengths)
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=0)
    assert len(recs) == 4 and [(r["layer"], r["direction"]) for r in recs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in recs:
        for g in rnn.cells[r["layer"] * 2 + r["direction"]].gate_names:
            assert r[g].shape == (2, 5, 4)
        assert torch.all(r["h"][1, 3:] == 0)
    # the recorded hidden states are the layer's outputs, both directions
    torch.testing.assert_close(torch.cat([recs[2]["h"], recs[3]["h"]], -1), out, atol=1e-6, rtol=0)
    if name == "dglstm":
        assert "d" in recs[2] and "d" not in recs[0]
