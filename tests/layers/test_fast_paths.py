"""The fused kernels (``Recurrent(impl="fused")``) against the reference step loop.

Every cell of the zoo: outputs, final states and the gradients of every
parameter, the input and the initial state agree in float64 (random weights,
padded batch, 2 layers, bidirectional, non-zero initial state); gradcheck
passes through the fused path; and ``auto`` really runs the fused kernels.
"""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from recur_attn.cells import CELLS
from recur_attn.layers import Recurrent
from recur_attn.layers.fast import FUSED_CELLS, forward_fused, native, reusable_backward
from recur_attn.layers.fast import common as fast_common
from recur_attn.layers.recurrent import (CPU_FUSED_FIRST, SHORT_CALL_ROWS, SHORT_CALL_STEPS, SHORT_CALL_TORCH,
                                         SINGLE_STEP_LSTM_ROWS, TORCH_FUSED)

ALL = sorted(CELLS)


def make_pair(cell, I=5, H=4, layers=2, bidirectional=True, **kw):
    if cell == "clockwork":
        kw.setdefault("num_modules", 2)
    torch.manual_seed(0)
    ref = Recurrent(cell, I, H, num_layers=layers, bidirectional=bidirectional, impl="reference", **kw).double()
    with torch.no_grad():  # random weights, away from any special value
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        for k, c in enumerate(ref.cells):  # clockwork keeps its block-triangular mask
            if cell == "clockwork":
                ref.cell_params(k)["weight_hh"].mul_(c.hh_mask.double())
    fast = Recurrent(cell, I, H, num_layers=layers, bidirectional=bidirectional, impl="fused", **kw).double()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def run(m, x, state, lengths):
    out, st = m(x, state, lengths=lengths)
    st = st if isinstance(st, tuple) else (st,)
    gen = torch.Generator().manual_seed(1)  # the same loss weights on every device
    loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)).sum()
    for j, s in enumerate(st):
        loss = loss + (s * torch.randn(s.shape, generator=gen, dtype=s.dtype).to(s.device)).sum() * (j + 1)
    params = list(m.parameters())
    leaves = [x] + list(state) + params
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out, st, grads


def random_state(m, B):
    return tuple(torch.randn(s.shape, dtype=torch.float64) * 0.5 for s in m.init_state(B, torch.float64, "cpu"))


# cells whose fused kernel has a C++ forward loop (fast/native.py)
NATIVE_CELLS = ("lstm", "vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr", "dglstm", "gru",
                "gru_cho", "mut1", "mut2", "mut3")
NO_CXX = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
NATIVE_MODES = [pytest.param("on", marks=NO_CXX), "off"]


# the LSTM family and the reset-before GRU family run through the C++ kernels (fast/native.py) on CPU
# when they can be built: both ways are checked against the reference
@pytest.mark.parametrize("cell,native_mode", [pytest.param(c, "on", marks=NO_CXX) for c in NATIVE_CELLS]
                         + [(c, "off") for c in ALL])
def test_fused_equals_reference(cell, native_mode):
    with native.using(native_mode):
        _fused_equals_reference(cell)


LSTM_NATIVE = ("lstm", "vanilla", "nig", "nfg", "nog", "niaf", "noaf", "cifg", "dglstm")
GRU_NATIVE = ("gru", "gru_cho", "mut1", "mut2", "mut3")


@pytest.fixture
def two_threads():
    """torch threads = 2 for the test (the C++ forward loop's two ways of splitting work need >= 2)"""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


# the C++ forward of the LSTM family fuses the recurrent GEMM with the elementwise step on panels of
# 8 (double) / 16 (float) hidden units and tiles of up to 24 rows: B = 29 rows give several tiles and
# a partial tile (4 gate blocks: tiles of 6 rows). H = 20: two full panels and a partial one, rows not
# cache-line aligned, so threads take panels at every step; H = 16: rows of 128 bytes, so each of the
# two threads owns every other row for the whole sequence (padded rows ending at different steps). The
# backward's fused dh GEMM takes tiles of 4 blocks of H/4 units where 4 divides H (20, 16), else tiles of
# one block (H = 18)
# The reset-before GRU family's C++ loops fuse their two dependent GEMMs a step the same way (gemv_tiles): H = 20
# (4-block tiles of 5 units) and 18 (one block) split panels between threads at both phases of a step, H = 16 gives
# each thread its own rows for the whole loop
@pytest.mark.parametrize("H", [20, 16, 18])
@pytest.mark.parametrize("cell", [pytest.param(c, marks=NO_CXX) for c in LSTM_NATIVE + ("fgr",) + GRU_NATIVE])
def test_native_wide_layer_and_many_rows(cell, H, two_threads):
    with native.using("on"):
        _fused_equals_reference(cell, H=H, B=29, layers=2 if cell == "dglstm" else 1, bidirectional=False)


# the Elman cells' and clockwork's C++ loops (forward and backward) fuse the recurrent GEMM the same way: H = 20
# splits panels between threads, H = 16 gives each thread its rows; rnn_tanh/rnn_relu take tiles of 6 rows x 4
# blocks of H/4 units where 4 divides H (20: blocks of 5, one partial panel each; 16), else of 12 rows x one
# block (H = 18), as clockwork always does; its ticking prefix ends inside a panel (modules of 5 and 4 units)
@pytest.mark.parametrize("cell,H,modules", [
    pytest.param(*c, marks=NO_CXX) for c in (("clockwork", 20, 4), ("clockwork", 16, 4), ("clockwork", 20, 2),
                                             ("rnn_tanh", 20, 0), ("rnn_tanh", 16, 0), ("rnn_tanh", 18, 0),
                                             ("rnn_relu", 20, 0), ("rnn_relu", 16, 0), ("rnn_relu", 18, 0))])
def test_native_elman_wide_layer_and_many_rows(cell, H, modules, two_threads):
    kw = {"num_modules": modules} if modules else {}
    with native.using("on"):
        _fused_equals_reference(cell, H=H, B=29, layers=1, bidirectional=False, **kw)


# without a backward pass the whole call is one op (native.lstm_infer), which reads W_ih and W_hh (and fgr's W_gh,
# rows and columns) in the cell's own gate order (i, f, g, o) through block maps instead of reordered copies
# (internal order o, i, f, g): every LSTM-family cell, float64 and float32, panels split (H = 20, partial panels)
# and rows owned (H = 16), padded and not, 2 layers, bidirectional
@pytest.mark.parametrize("H", [20, 16])
@pytest.mark.parametrize("cell", [pytest.param(c, marks=NO_CXX) for c in LSTM_NATIVE + ("fgr",)])
def test_native_inference_reads_the_weights_in_the_cells_gate_order(cell, H, two_threads, monkeypatch):
    ref, fast = make_pair(cell, H=H)
    calls = []  # (blocks, bs) of each native.lstm_infer call
    real_infer, real_loop = native.lstm_infer, native.lstm_forward_loop
    monkeypatch.setattr(native, "lstm_infer", lambda *a, **k: calls.append((a[15], a[16])) or real_infer(*a, **k))
    loops = []
    monkeypatch.setattr(native, "lstm_forward_loop", lambda *a, **k: loops.append(1) or real_loop(*a, **k))
    torch.manual_seed(2)
    B = 29
    x = torch.randn(7, B, 5, dtype=torch.float64)
    state = random_state(ref, B)
    for lengths in (torch.tensor([4, 7, 2, 7] * 7 + [5]), None):  # padded, then not
        for dt, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
            r, f = ref.to(dt), fast.to(dt)
            with torch.no_grad(), native.using("on"):
                o1, s1 = r(x.to(dt), tuple(s.to(dt) for s in state), lengths=lengths)
                o2, s2 = f(x.to(dt), tuple(s.to(dt) for s in state), lengths=lengths)
            torch.testing.assert_close(o2, o1, rtol=tol, atol=tol)
            for a, b in zip(s2, s1):
                torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    # every call was one op (no Python loop around native.lstm_forward_loop): 2 x 2 dtypes x 2 layers x 2
    # directions, the padded ones with the batch sizes
    assert len(calls) == 16 and not loops
    assert all(list(bs) == ([29, 29, 22, 22, 15, 14, 14] if i < 8 else []) for i, (_, bs) in enumerate(calls))
    blocks = [b for b, _ in calls]
    assert all(len(b) == (7 if cell == "fgr" else 4 - (cell in ("nig", "nfg", "nog", "cifg"))) for b in blocks)
    assert any(list(b) != sorted(b) for b in blocks) == (cell != "nog")  # nog's i, f, g is the same order


# inference of the GRU family is one op a layer-direction (native.gru_after_infer for gru, native.gru_before_infer
# for gru_cho and MUT1-3), padded or not; I = H = 16 feeds MUT1's n and MUT2's r with x itself in the first layer
# (projected in the second, whose input is 2H), B = 9 gives each of two threads its own rows, B = 5 splits panels
@pytest.mark.parametrize("I,B", [(5, 5), (16, 9)])
@pytest.mark.parametrize("cell", [pytest.param(c, marks=NO_CXX) for c in ("gru", "gru_cho", "mut1", "mut2", "mut3")])
def test_native_gru_inference_in_one_op(cell, I, B, monkeypatch, two_threads):
    ref, fast = make_pair(cell, I=I, H=16)
    calls = []
    op = "gru_after_infer" if cell == "gru" else "gru_before_infer"
    real = getattr(native, op)
    monkeypatch.setattr(native, op, lambda *a, **k: calls.append(a[7]) or real(*a, **k))
    _inference_equals_reference(ref, fast, I, B)
    assert len(calls) == 2 * 2 * 4  # unpadded and padded x 2 dtypes x 2 layers x 2 directions
    assert [len(bs) for bs in calls] == [0] * 8 + [9] * 8  # the padded calls get their batch sizes


def _inference_equals_reference(ref, fast, I, B):
    """No-grad calls of a one-layer-state cell (T = 9), unpadded and padded, float64 and float32, with the C++
    kernels on: the fused module's outputs and final state equal the reference's."""
    torch.manual_seed(3)
    x = torch.randn(9, B, I, dtype=torch.float64)
    state = random_state(ref, B)
    for lengths in (None, torch.tensor([3, 9, 1, 9, 6, 2, 9, 4, 8][:B])):
        for dt, tol in ((torch.float64, 1e-10), (torch.float32, 2e-5)):
            r, f = ref.to(dt), fast.to(dt)
            with torch.no_grad(), native.using("on"):
                o1, s1 = r(x.to(dt), state[0].to(dt), lengths=lengths)
                o2, s2 = f(x.to(dt), state[0].to(dt), lengths=lengths)
            torch.testing.assert_close(o2, o1, rtol=tol, atol=tol)
            torch.testing.assert_close(s2, s1, rtol=tol, atol=tol)


# inference of the Elman cells and clockwork is one op a layer-direction (native.elman_infer), padded or not
@pytest.mark.parametrize("cell", [pytest.param(c, marks=NO_CXX) for c in ("rnn_tanh", "rnn_relu", "clockwork")])
def test_native_elman_inference_in_one_op(cell, monkeypatch):
    ref, fast = make_pair(cell, H=16)
    calls = []
    real = native.elman_infer
    monkeypatch.setattr(native, "elman_infer", lambda *a, **k: calls.append(1) or real(*a, **k))
    _inference_equals_reference(ref, fast, 5, 5)
    assert len(calls) == 2 * 2 * 4  # unpadded and padded x 2 dtypes x 2 layers x 2 directions


@pytest.mark.parametrize("cell", [pytest.param(c, marks=NO_CXX) for c in ("vanilla", "dglstm")])
def test_native_weights_larger_than_l2(cell, two_threads):
    """H = 512 in float32: 4 MB of packed recurrent weights, so threads take panels and each panel's row
    tiles prefetch the next panel (a hint only: the numbers must not move), forward and backward."""
    torch.manual_seed(7)
    ref = Recurrent(cell, 3, 512, num_layers=2 if cell == "dglstm" else 1, impl="reference")
    fast = Recurrent(cell, 3, 512, num_layers=2 if cell == "dglstm" else 1, impl="fused")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 14, 3, requires_grad=True)
    lengths = torch.tensor([3, 1, 2, 3, 3, 2, 1, 3, 2, 3, 1, 3, 3, 2])
    state = tuple(s.float().requires_grad_() for s in random_state(ref, 14))
    with native.using("on"):
        o1, s1, g1 = run(ref, x, state, lengths)
        o2, s2, g2 = run(fast, x, state, lengths)
    torch.testing.assert_close(o2, o1, rtol=1e-4, atol=1e-5)
    for a, b in zip(s2 + g2, s1 + g1):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_fgr_gate_weight_gradient_in_chunks_of_steps(chunk, monkeypatch):
    """The C++ backward computes fgr's dW_gh with one GEMM per chunk of steps (a buffer of the previous
    steps' activations): chunks of 1 and 3 steps over T = 7 (a partial chunk at the top), and one chunk,
    padded rows ending inside chunks, equal the reference."""
    monkeypatch.setattr(fast_common, "CHUNK_ELEMS", 4 * 12 * chunk)  # B = 4, nGH = 3 H = 12
    assert fast_common.chunk_steps(7, 4, 12) == min(chunk, 7)
    with native.using("on"):
        _fused_equals_reference("fgr", layers=1, bidirectional=False)


@pytest.mark.parametrize("native_mode", NATIVE_MODES)
def test_nan_propagates_through_the_fused_relu_rnn(native_mode):
    """relu keeps NaN (as torch.relu), also in the C++ loop built with -ffast-math."""
    ref = Recurrent("rnn_relu", 3, 4, impl="reference")
    fast = Recurrent("rnn_relu", 3, 4, impl="fused")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 3)
    x[2, 1, 0] = float("nan")
    with native.using(native_mode):
        o1, _ = ref(x)
        o2, _ = fast(x)
    assert torch.equal(o1.isnan(), o2.isnan()) and o2[2:, 1].isnan().all()
    torch.testing.assert_close(o2.nan_to_num(), o1.nan_to_num())


def _fused_equals_reference(cell, H=4, B=4, device="cpu", **kw):
    """The fused path (on `device`) against the reference loop on the CPU, float64."""
    ref, fast = make_pair(cell, H=H, **kw)
    T = 7
    torch.manual_seed(2)
    x = torch.randn(T, B, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 7, 2, 7] * (B // 4) + [5] * (B % 4))  # unsorted, with padding
    state = tuple(s.requires_grad_() for s in random_state(ref, B))
    o1, s1, g1 = run(ref, x, state, lengths)
    fast.to(device)
    leaves = [v.detach().to(device).requires_grad_() for v in (x, *state)]
    o2, s2, g2 = run(fast, leaves[0], tuple(leaves[1:]), lengths)
    assert fast.active_impl == "fused" and o2.device.type == torch.device(device).type
    o2, s2 = o2.cpu(), tuple(v.cpu() for v in s2)
    g2 = tuple(None if g is None else g.cpu() for g in g2)
    torch.testing.assert_close(o2, o1, rtol=1e-9, atol=1e-10)
    assert (o2[4:, 0] == 0).all() and (o2[2:, 2] == 0).all()
    for a, b in zip(s2, s1):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    names = ["x"] + [f"state{j}" for j in range(len(state))] + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, g2, g1):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0, name
            continue
        assert a is not None, name
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9, msg=lambda m, n=name: f"{cell} grad {n}: {m}")


# combinations the parametrized tests above do not enumerate: 200 seeded random configurations (cell, layers,
# directions, batch_first, sizes with and without full panels, no lengths / lengths / sorted or unsorted
# PackedSequence, given or default state, training or no grad), "auto" (whatever it picks: torch's kernel,
# the fused kernels, the cell's step at T == 1) against the reference: outputs, final states, every gradient
@pytest.mark.parametrize("native_mode", NATIVE_MODES)
def test_random_configurations_auto_equals_reference(native_mode):
    rng = random.Random(0)
    for i in range(200):
        cell, layers, bi, bf = rng.choice(ALL), rng.choice([1, 2, 3]), rng.random() < 0.5, rng.random() < 0.5
        I, H, T, B = rng.choice([1, 3, 5]), rng.choice([2, 4, 6, 16, 17, 20]), rng.choice([1, 2, 3, 7]), \
            rng.choice([1, 2, 5, 13])
        mode, give_state, train = rng.choice(["none", "lengths", "packed", "unsorted"]), rng.random() < 0.5, \
            rng.random() < 0.7
        kw = {"num_modules": 2 if H % 2 == 0 else 1} if cell == "clockwork" else {}
        ref, _ = make_pair(cell, I=I, H=H, layers=layers, bidirectional=bi, batch_first=bf, **kw)
        auto = Recurrent(cell, I, H, num_layers=layers, bidirectional=bi, batch_first=bf, **kw).double()
        auto.load_state_dict(ref.state_dict())
        torch.manual_seed(i)
        x = torch.randn(*((B, T, I) if bf else (T, B, I)), dtype=torch.float64, requires_grad=train)
        lengths = torch.tensor([rng.randint(1, T) for _ in range(B)])
        state = random_state(ref, B) if give_state else None
        if state is not None and train:
            state = tuple(s.requires_grad_() for s in state)
        results = []
        for m in (ref, auto):
            st = None if state is None else (state if len(state) > 1 else state[0])
            with torch.set_grad_enabled(train), reusable_backward(), native.using(native_mode):
                if mode == "none":
                    out, s = m(x, st)
                elif mode == "lengths":
                    out, s = m(x, st, lengths=lengths)
                else:
                    ln = lengths if mode == "unsorted" else lengths.sort(descending=True).values
                    out, s = m(pack_padded_sequence(x, ln, batch_first=bf, enforce_sorted=mode == "packed"), st)
                    out = out.data
                s = s if isinstance(s, tuple) else (s,)
                grads = ()
                if train:
                    gen = torch.Generator().manual_seed(1)
                    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in (out,) + s)
                    leaves = [x] + list(state or ()) + list(m.parameters())
                    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            results.append((out,) + s + tuple(grads))
        where = f"config {i}: {cell} layers={layers} bi={bi} bf={bf} I={I} H={H} T={T} B={B} {mode} state={give_state} " \
                f"train={train} ({auto.impl_for(T, B)})"
        for a, b in zip(results[1], results[0]):
            assert (a is None) == (b is None), where
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8, msg=lambda m: f"{where}: {m}")


# a loss on the outputs alone or on the final state alone: the fused backward gets no gradient (None, not
# materialized zeros) for the other, and for the gate buffer the GRU-before kernel returns last
@pytest.mark.parametrize("native_mode", NATIVE_MODES)
@pytest.mark.parametrize("cell", ["vanilla", "fgr", "gru", "gru_cho", "mut1", "mut3", "rnn_tanh", "clockwork"])
def test_fused_gradients_of_outputs_alone_and_final_state_alone(cell, native_mode):
    ref, fast = make_pair(cell, layers=1, bidirectional=False)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    with native.using(native_mode):
        for pick in (lambda o, s: o, lambda o, s: s[0]):
            grads = []
            for m in (ref, fast):
                out, state = m(x, lengths=lengths)
                loss = (pick(out, state if isinstance(state, tuple) else (state,)) ** 2).sum()
                grads.append(torch.autograd.grad(loss, list(m.parameters())))
            for a, b in zip(*grads):
                torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("cell", ["vanilla", "cifg", "fgr", "gru_cho", "mut3", "clockwork"])
def test_fused_full_length_no_grad_and_batch_first(cell):
    """No lengths, batch_first, one layer; and the no-grad (inference) path gives the same numbers."""
    ref, fast = make_pair(cell, layers=1, bidirectional=False, batch_first=True)
    x = torch.randn(3, 9, 5, dtype=torch.float64)
    o1, s1 = ref(x)
    o2, s2 = fast(x)
    with torch.no_grad():
        o3, s3 = fast(x)
    torch.testing.assert_close(o2, o1)
    torch.testing.assert_close(o3, o1)
    for a, b, c in zip(s2 if isinstance(s2, tuple) else (s2,), s1 if isinstance(s1, tuple) else (s1,),
                       s3 if isinstance(s3, tuple) else (s3,)):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(c, b)


@pytest.mark.parametrize("cell", ["vanilla", "cifg", "fgr", "gru", "mut3", "dglstm", "clockwork", "rnn_relu"])
def test_gradcheck_through_fused_path(cell):
    torch.manual_seed(3)
    m = Recurrent(cell, 3, 2, num_layers=2 if cell == "dglstm" else 1, impl="fused",
                  **({"num_modules": 2} if cell == "clockwork" else {})).double()
    T = 3 if cell in ("dglstm", "fgr") else 4
    x = torch.randn(T, 2, 3, dtype=torch.float64, requires_grad=True)
    state = tuple(s.requires_grad_() for s in random_state(m, 2))
    lengths = torch.tensor([T - 1, T])
    names = [n for n, _ in m.named_parameters()]
    params = list(m.parameters())

    def f(x, *rest):
        st, ps = rest[:len(state)], rest[len(state):]
        out, new = torch.func.functional_call(m, dict(zip(names, ps)), (x, st), {"lengths": lengths})
        new = new if isinstance(new, tuple) else (new,)
        return (out,) + new

    with reusable_backward():  # gradcheck runs each backward several times
        assert torch.autograd.gradcheck(f, (x, *state, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", ALL)
def test_auto_runs_the_fused_kernel(cell, monkeypatch):
    """``auto`` must not fall back to the reference loop for a cell that has a fast path."""
    assert cell in FUSED_CELLS or cell in TORCH_FUSED
    m = Recurrent(cell, 3, 4, num_layers=2 if cell == "dglstm" else 1,
                  **({"num_modules": 2} if cell == "clockwork" else {}))
    calls = {"fused": 0}

    def no_reference(*a, **k):
        raise AssertionError(f"{cell}: Recurrent(impl='auto') ran the reference path")

    from recur_attn.layers import recurrent as rec_mod

    real = rec_mod.forward_fused

    def counting(*a, **k):
        calls["fused"] += 1
        return real(*a, **k)

    monkeypatch.setattr(m, "_forward_reference", no_reference)
    monkeypatch.setattr(rec_mod, "forward_fused", counting)
    m(torch.randn(5, 2, 3))
    if cell in TORCH_FUSED and not (cell in CPU_FUSED_FIRST and native.state() == "on"):
        assert m.active_impl == "torch" and calls["fused"] == 0
    else:
        assert m.active_impl == "fused" and calls["fused"] == 1
    assert forward_fused is real


@pytest.mark.parametrize("cell", ["gru", "rnn_tanh", "rnn_relu", "lstm"])
def test_auto_keeps_torchs_kernel_for_short_calls_where_it_is_faster(cell, monkeypatch):
    """gru and the Elman cells run their fused kernel on CPU (CPU_FUSED_FIRST) but torch's for calls of at most
    SHORT_CALL_STEPS steps and SHORT_CALL_ROWS rows, where its set-up per call makes it the slower; lstm keeps
    the fused kernel (the faster one for short calls too)."""
    torch.manual_seed(2)
    m = Recurrent(cell, 3, 4)
    if m.active_impl != "fused":
        pytest.skip("the C++ kernels are not built: auto runs torch's kernel everywhere")
    short = "torch" if cell in SHORT_CALL_TORCH else "fused"
    assert m.impl_for(SHORT_CALL_STEPS, SHORT_CALL_ROWS) == m.impl_for(2, 1) == short
    assert m.impl_for(SHORT_CALL_STEPS + 1, SHORT_CALL_ROWS) == m.impl_for(2, SHORT_CALL_ROWS + 1) == "fused"
    assert m.impl_for(2, 1, "cuda") == m.active_impl  # measured on CPU only
    ran = []
    monkeypatch.setattr(m, "_forward_torch", lambda *a, **k: ran.append("torch") or Recurrent._forward_torch(m, *a))
    from recur_attn.layers import recurrent as rec_mod
    real = rec_mod.forward_fused
    monkeypatch.setattr(rec_mod, "forward_fused", lambda *a, **k: ran.append("fused") or real(*a, **k))
    x = torch.randn(SHORT_CALL_STEPS + 1, 2, 3)
    with torch.no_grad():
        whole, _ = m(x)
        part, _ = m(x[:SHORT_CALL_STEPS])
    assert ran == ["fused", short]
    torch.testing.assert_close(part, whole[:SHORT_CALL_STEPS], rtol=1e-5, atol=1e-6)

@pytest.mark.parametrize("cell", ALL)
def test_auto_runs_single_steps_on_cpu_with_torch_or_the_cells_step(cell, monkeypatch):
    """auto on CPU, T == 1 (sampling a token at a time): torch's kernel for torch's cells, the cell's own step
    for the others, as impl_for says; sequences keep the fast path; impl="fused" is obeyed at T == 1 too. Step
    by step, carrying the state, the outputs equal one whole-sequence pass."""
    kw = {"num_modules": 2} if cell == "clockwork" else {}
    layers = 2 if cell == "dglstm" else 1
    torch.manual_seed(5)
    m = Recurrent(cell, 3, 4, num_layers=layers, **kw).double()
    fused = Recurrent(cell, 3, 4, num_layers=layers, impl="fused", **kw).double()
    fused.load_state_dict(m.state_dict())
    lstm_kernel = TORCH_FUSED.get(cell) == "lstm"  # torch's CPU LSTM: slower than the cell's step for few rows
    single = "torch" if cell in TORCH_FUSED and not lstm_kernel else "reference"
    assert m.impl_for(1) == single and m.impl_for(1, 2, "cpu") == single
    assert m.impl_for(1, SINGLE_STEP_LSTM_ROWS + 1) == ("torch" if cell in TORCH_FUSED else "reference")
    assert m.impl_for(5) == m.active_impl != "reference" and fused.impl_for(1) == "fused"
    assert m.impl_for(1, 2, "cuda") == m.active_impl  # the rule is measured on CPU only

    from recur_attn.layers import recurrent as rec_mod
    real = rec_mod.forward_fused
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    whole, whole_state = fused(x)

    def no_fused(rnn, *a, **k):
        assert rnn is fused, f"{cell}: auto ran the fused kernels for a single step"
        return real(rnn, *a, **k)

    monkeypatch.setattr(rec_mod, "forward_fused", no_fused)
    if single == "reference":
        monkeypatch.setattr(m, "_forward_torch", lambda *a: pytest.fail("torch kernel"))
    else:
        monkeypatch.setattr(m, "_forward_reference", lambda *a, **k: pytest.fail("reference path"))
    runs = []
    for rnn in (m, fused):  # impl="fused" at T == 1: still the fused kernels (no_fused lets it through)
        state, outs = None, []
        for t in range(5):
            out, state = rnn(x[t:t + 1], state)
            outs.append(out)
        runs.append((torch.cat(outs), state if isinstance(state, tuple) else (state,)))
    (o_auto, s_auto), (o_fused, s_fused) = runs
    torch.testing.assert_close(o_auto, o_fused)
    for a, b in zip(s_auto, s_fused):
        torch.testing.assert_close(a, b)
    if cell != "clockwork":  # each call starts its clock at t = 0, so clockwork's steps are not one pass
        torch.testing.assert_close(o_auto, whole)
        for a, b in zip(s_auto, whole_state if isinstance(whole_state, tuple) else (whole_state,)):
            torch.testing.assert_close(a, b)


def test_reference_still_selectable_and_fused_rejects_non_chain_clockwork():
    m = Recurrent("cifg", 3, 4, impl="reference")
    assert m.active_impl == "reference"
    with pytest.raises(ValueError, match="divisibility chain"):
        Recurrent("clockwork", 3, 6, impl="fused", periods=[1, 2, 3])
    auto = Recurrent("clockwork", 3, 6, periods=[1, 2, 3])
    assert auto.active_impl == "reference"  # says so, and runs the loop


def test_backward_twice_is_refused():
    m = Recurrent("vanilla", 3, 4, impl="fused")
    out, _ = m(torch.randn(5, 2, 3))
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        out.sum().backward()
    m.zero_grad(set_to_none=True)
    with reusable_backward():
        out, _ = m(torch.randn(5, 2, 3))
    out.sum().backward(retain_graph=True)
    g1 = m.weight_hh_l0.grad.clone()
    out.sum().backward()
    torch.testing.assert_close(m.weight_hh_l0.grad, 2 * g1)


# one cell per autograd Function of the fused kernels (LSTM family, GRU reset-after, GRU reset-before and
# MUT, Elman and clockwork): a double backward is refused with a clear error, where it used to give a
# gradient without a graph (second derivatives with respect to the weights silently missing); the
# reference path gives them
@pytest.mark.parametrize("cell", ["vanilla", "dglstm", "gru", "gru_cho", "mut1", "rnn_tanh", "clockwork"])
def test_double_backward_through_fused_path_is_refused(cell):
    ref, fast = make_pair(cell, layers=1, bidirectional=False)
    x = torch.randn(5, 2, 5, dtype=torch.float64, requires_grad=True)
    out, _ = ref(x)
    g, = torch.autograd.grad((out ** 2).sum(), x, create_graph=True)
    gw = torch.autograd.grad(g.pow(2).sum(), ref.weight_hh_l0)[0]
    assert gw.abs().sum() > 0
    for m in (fast, Recurrent(cell, 5, 4, num_modules=2) if cell == "clockwork" else Recurrent(cell, 5, 4)):
        if cell in TORCH_FUSED and m.impl == "auto":
            continue  # auto runs torch's kernel for these
        m = m.double()
        assert m.impl_for(5, 2) == "fused"
        out, _ = m(x)
        with pytest.raises(RuntimeError, match="first-order backward pass only.*impl='reference'"):
            torch.autograd.grad((out ** 2).sum(), x, create_graph=True)
        out, _ = m(x)  # a first-order backward still works
        assert torch.autograd.grad((out ** 2).sum(), x)[0].shape == x.shape


# bf16 autocast, every cell: through the C++ kernels ("on", the LSTM and reset-before GRU families) and
# through the torch-op kernels ("off": the code that runs on CUDA, where the C++ loops do not)
@pytest.mark.parametrize("cell,native_mode", [pytest.param(c, "on", marks=NO_CXX) for c in NATIVE_CELLS]
                         + [(c, "off") for c in ALL])
def test_bf16_autocast_through_fused_path(cell, native_mode):
    with native.using(native_mode):
        _bf16_autocast_close_to_float32(cell, "fused", "cpu")


def _bf16_autocast_close_to_float32(cell, impl, device):
    """Under autocast the recurrence runs in bf16 and stays close to float32 (random weights, padded
    batch, 2 layers); every parameter gets a finite float32 gradient, and it is near float32's."""
    torch.manual_seed(4)
    m = Recurrent(cell, 6, 8, num_layers=2, impl=impl, **({"num_modules": 2} if cell == "clockwork" else {}))
    m.to(device)
    x = torch.randn(5, 3, 6, device=device)
    lengths = torch.tensor([5, 3, 4])
    ref, _ = m(x, lengths=lengths)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in m.parameters()]
    m.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16):
        out, _ = m(x, lengths=lengths)
    # cuDNN's RNNs cast to float16 under CUDA autocast whatever its dtype (torch's autocast wrapper for
    # _cudnn_rnn, aten/src/ATen/cudnn/AutocastRNN.cpp), so the five cells "auto" hands to cuDNN may give that
    lower = (torch.bfloat16, torch.float16) if m.active_impl == "torch" and device == "cuda" else (torch.bfloat16,)
    assert out.dtype in lower
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)
    out.float().sum().backward()
    for (name, p), g in zip(m.named_parameters(), ref_grads):
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
        torch.testing.assert_close(p.grad, g, atol=0.1 * g.abs().max().item() + 1e-3, rtol=0.1, msg=name)


@pytest.mark.parametrize("name", ["clockwork", "rnn_relu", "gru_cho", "gru", "vanilla", "dglstm"])
def test_batch_first_non_contiguous_output_gradient(name):
    """batch_first hands the kernels a transposed (non-contiguous) output gradient."""
    torch.manual_seed(0)
    kw = {"num_modules": 4} if name == "clockwork" else {}
    fused = Recurrent(name, 2, 8, num_layers=2, batch_first=True, impl="fused", **kw).double()
    ref = Recurrent(name, 2, 8, num_layers=2, batch_first=True, impl="reference", **kw).double()
    ref.load_state_dict(fused.state_dict())
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    grads = []
    for rnn in (fused, ref):
        rnn.zero_grad()
        out, _ = rnn(x, lengths=torch.tensor([5, 3, 4]))
        (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin()).sum().backward()
        grads.append({n: p.grad.clone() for n, p in rnn.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-10, rtol=0, msg=n)


def test_native_kernels_build_where_there_is_a_compiler():
    """With a C++ compiler the native kernels must build (else CPU runs would silently be slower)."""
    if shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    assert native.available(), native.status()
    with native.using("auto"):
        assert native.status().startswith("on")


def test_stale_native_builds_are_pruned(tmp_path):
    """Each change of the C++ source builds into a new folder: folders unused for STALE_DAYS go,
    recent ones (another torch or CPU using the same cache) and foreign folders stay."""
    import os
    import time

    cur, old, recent, foreign = (tmp_path / n for n in ("cur", "old", "recent", "foreign"))
    for d in (old, recent):
        d.mkdir()
        (d / "build.ninja").write_text("")
    foreign.mkdir()
    past = time.time() - (native.STALE_DAYS + 1) * 86400
    os.utime(old, (past, past))
    os.utime(foreign, (past, past))
    assert native.prune_stale_builds(cur) == [old]
    assert not old.exists() and recent.exists() and foreign.exists() and (cur / "last_used").exists()


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("native_mode", NATIVE_MODES)
@pytest.mark.parametrize("cell", ["vanilla", "nig", "cifg", "niaf", "dglstm", "gru", "gru_cho", "mut1", "mut2"])
def test_chunked_inference_projection(cell, native_mode, chunk, monkeypatch):
    """Inference computes the input projection in chunks of steps (a reused buffer): chunks of 1 and 3
    steps over T=7 (a partial last chunk), padded, 2 layers, both directions, equal the reference.
    (MUT1/MUT2 here project their identity block: I = 5 and 8 != H = 4.)"""
    ref, fast = make_pair(cell)
    x = torch.randn(7, 4, 5, dtype=torch.float64)
    lengths = torch.tensor([4, 7, 2, 7])
    state = random_state(ref, 4)
    nP = (5 if cell == "dglstm" else 4) * 4 if cell not in ("nig", "cifg", "gru", "gru_cho", "mut1", "mut2") else 3 * 4
    monkeypatch.setattr(fast_common, "CHUNK_ELEMS", 4 * nP * chunk)
    assert fast_common.chunk_steps(7, 4, nP) == chunk
    with native.using(native_mode), torch.no_grad():
        o1, s1 = ref(x, state, lengths=lengths)
        o2, s2 = fast(x, state, lengths=lengths)
    torch.testing.assert_close(o2, o1, rtol=1e-9, atol=1e-10)
    for a, b in zip(s2, s1):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("native_mode", NATIVE_MODES)
def test_nan_propagates_through_the_fused_lstm(native_mode):
    """A NaN in the input must reach the outputs (no clamping hides it)."""
    m = Recurrent("vanilla", 3, 4)
    x = torch.randn(5, 2, 3)
    x[2, 1, 0] = float("nan")
    with native.using(native_mode), torch.no_grad():
        out, (h, c) = m(x)
    assert torch.isnan(out[2:, 1]).all() and not torch.isnan(out[:, 0]).any() and torch.isnan(c[0, 1]).all()


def test_native_mode_errors(monkeypatch):
    with pytest.raises(ValueError, match="RECUR_ATTN_NATIVE='fast'.*auto, on"):
        native._parse("fast")
    monkeypatch.setitem(native._state, "loaded", False)
    monkeypatch.setitem(native._state, "error", "CalledProcessError: g++ failed")
    x = torch.randn(2, 2)
    with native.using("on"), pytest.raises(RuntimeError, match="could not be built: CalledProcessError"):
        native.enabled_for(x)
    monkeypatch.setitem(native._state, "warned", False)
    with native.using("auto"), pytest.warns(RuntimeWarning, match="could not be built"):
        assert native.enabled_for(x) is False
    with native.using("off"):
        assert native.enabled_for(x) is False
        assert native.status().startswith("off")


def test_np_runs_nn_lstm_kernel_and_equals_its_reference():
    """Greff's np (no peepholes) is nn.LSTM's equations: impl="torch" runs torch's kernel (auto's choice on
    GPU, and on CPU without the C++ kernels), same numbers as the reference and the fused kernels."""
    ref, _ = make_pair("np")
    for impl in ("torch", "auto"):
        m = Recurrent("np", 5, 4, num_layers=2, bidirectional=True, impl=impl).double()
        m.load_state_dict(ref.state_dict())
        assert m.active_impl == ("torch" if impl == "torch" or native.state() != "on" else "fused")
        x = torch.randn(7, 4, 5, dtype=torch.float64, requires_grad=True)
        lengths = torch.tensor([4, 7, 2, 7])
        state = tuple(s.requires_grad_() for s in random_state(ref, 4))
        o1, s1, g1 = run(ref, x, state, lengths)
        o2, s2, g2 = run(m, x, state, lengths)
        torch.testing.assert_close(o2, o1)
        for a, b in zip(s2 + g2, s1 + g1):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("H", [40, 32, 64])
@pytest.mark.parametrize("native_mode", NATIVE_MODES)
@pytest.mark.parametrize("cell", LSTM_NATIVE + ("fgr", "clockwork", "rnn_tanh") + GRU_NATIVE)
def test_float32_fused_equals_reference(cell, native_mode, H, two_threads):
    """float32 (where the native forward runs the fused GEMM + step kernel with its vector tanh):
    outputs, states and gradients agree with the reference loop to float32 accuracy. B = 13: two tiles
    of 6 rows and a partial one. H = 40: two 16-unit panels and a partial one, threads taking panels;
    H = 32: line-aligned rows, each thread owning its rows for the whole sequence; H = 64: the backward's
    tiles of 4 blocks of 16 units run its vector epilogue."""
    torch.manual_seed(5)
    kw = dict(num_layers=2, bidirectional=True)
    ref = Recurrent(cell, 6, H, impl="reference", **kw)
    fast = Recurrent(cell, 6, H, impl="fused", **kw)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(9, 13, 6, requires_grad=True)
    lengths = torch.tensor([9, 4, 7, 1, 9, 3, 9, 8, 2, 5, 9, 6, 7])
    state = tuple(s.float().requires_grad_() for s in random_state(ref, 13))
    with native.using(native_mode):
        o1, s1, g1 = run(ref, x, state, lengths)
        o2, s2, g2 = run(fast, x, state, lengths)
        with torch.no_grad():
            o3, s3 = fast(x, state, lengths=lengths)
    torch.testing.assert_close(o2, o1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(o3, o1, rtol=1e-4, atol=1e-5)
    for a, b in zip(s2 + tuple(s3 if isinstance(s3, tuple) else (s3,)), s1 + s1):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(g2, g1):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_ninja_next_to_the_interpreter_is_put_on_path(monkeypatch, tmp_path):
    """An unactivated virtualenv's python: the pip-installed ninja beside it must be found."""
    import os
    import sys

    (tmp_path / "ninja").write_text("")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    monkeypatch.setenv("PATH", "/nowhere")
    native._ninja_on_path()
    assert os.environ["PATH"].split(os.pathsep)[0] == str(tmp_path)


def test_loading_the_kernels_does_not_warn_about_cuda():
    """Importing torch.utils.cpp_extension logs "No CUDA runtime is found" on CPU machines with a CUDA toolkit
    folder; loading our CPU kernels must not print it in every process (other warnings stay)."""
    import logging
    import subprocess
    import sys

    if not native.available():
        pytest.skip("no C++ compiler: the kernels are not built here")
    code = ("import logging; logging.basicConfig(); from recur_attn.layers.fast import native; "
            "assert native._load(); logging.getLogger('torch.utils.cpp_extension').warning('still shown')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "No CUDA runtime is found" not in res.stderr
    assert "still shown" in res.stderr
    assert not logging.getLogger("torch.utils.cpp_extension").filters  # the filter was taken off again


@pytest.mark.parametrize("cell", ["mut1", "mut2", "mut3", "gru_cho"])
def test_gru_family_input_size_equal_to_hidden(cell):
    """I == H: MUT1 and MUT2 feed one block with x itself (tanh(x) in MUT1), not a projection of it; the
    fused input projection must build it the same way (training and the chunked no-grad pass)."""
    ref, fast = make_pair(cell, I=4, H=4, layers=2, bidirectional=False)  # layer 2 also reads I == H
    torch.manual_seed(3)
    x = torch.randn(6, 5, 4, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 5, 6, 1])
    state = tuple(s.requires_grad_() for s in random_state(ref, 5))
    o1, s1, g1 = run(ref, x, state, lengths)
    o2, s2, g2 = run(fast, x, state, lengths)
    assert fast.active_impl == "fused"
    torch.testing.assert_close(o2, o1, rtol=1e-9, atol=1e-10)
    for a, b in zip(s2 + g2, s1 + g1):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)
    with torch.no_grad():
        o3, s3 = fast(x, state, lengths=lengths)
    torch.testing.assert_close(o3, o1, rtol=1e-9, atol=1e-10)



@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu"])
def test_auto_prefers_the_fused_elman_kernel_on_cpu_only_where_it_is_faster(cell):
    """auto runs the Elman C++ loop on CPU (float32/float64, C++ kernels built), torch's RNN kernel under CPU
    autocast (the C++ loop is float/double only), with the kernels off, and for bfloat16 weights."""
    m = Recurrent(cell, 3, 4)
    x = torch.randn(5, 2, 3)
    with native.using("off"):
        assert m.active_impl == "torch"
    if native.state() != "on":
        pytest.skip("the C++ kernels are not built here")
    assert m.active_impl == "fused"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.active_impl == "torch"
        m(x)
    assert m.double().active_impl == "fused"
    assert m.to(torch.bfloat16).active_impl == "torch"
    assert Recurrent(cell, 3, 4, impl="torch").active_impl == "torch"


# ---------------------------------------------------------------------------------------------- CUDA
# Skipped without a GPU (CI has none); `make test-gpu` or scripts/gpu_check.sh on a GPU machine. There the
# fused path runs its torch-op kernels (the C++ loops are CPU-only) and "auto" runs cuDNN for torch's cells.
CUDA = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
ON_CUDA = [pytest.param(c, marks=CUDA) for c in ALL]


@pytest.mark.parametrize("cell", ON_CUDA)
def test_fused_on_cuda_equals_reference(cell):
    """Outputs, final states and every gradient of the fused path on the GPU (float64) equal the CPU
    reference loop's: padded batch, 2 layers, bidirectional, non-zero initial state."""
    _fused_equals_reference(cell, device="cuda")


@pytest.mark.parametrize("cell", ON_CUDA)
def test_bf16_autocast_on_cuda(cell):
    """What users run on a GPU: impl="auto" (cuDNN for torch's cells, the fused path for the rest) under
    bf16 autocast, close to float32, with finite float32 gradients."""
    _bf16_autocast_close_to_float32(cell, "auto", "cuda")


@pytest.mark.parametrize("cell", ON_CUDA)
def test_auto_on_cuda_runs_cudnn_or_the_fused_kernels(cell):
    m = Recurrent(cell, 3, 4, num_layers=2 if cell == "dglstm" else 1,
                  **({"num_modules": 2} if cell == "clockwork" else {})).cuda()
    assert m.active_impl == ("torch" if cell in TORCH_FUSED else "fused")
    out, _ = m(torch.randn(5, 2, 3, device="cuda"))
    assert out.is_cuda and torch.isfinite(out).all()
