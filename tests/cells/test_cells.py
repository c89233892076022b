"""The cell zoo: registry, each Greff variant's defining property, gradcheck of every cell."""

import pytest
import torch

from recur_attn.cells import CELLS, GRU_FAMILY, LSTM_VARIANTS, build_cell

ALL = sorted(CELLS)


def make(name, I=3, H=4, **kw):
    if name == "dglstm":
        kw.setdefault("has_below", True)
    torch.manual_seed(0)
    return build_cell(name, I, H, **kw).double()


def step_inputs(cell, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, cell.input_size, generator=g, dtype=torch.float64)
    state = tuple(torch.randn(B, s, generator=g, dtype=torch.float64) for s in cell.state_sizes())
    below = torch.randn(B, cell.hidden_size, generator=g, dtype=torch.float64)
    return x, state, below


def test_registry_has_the_design_names():
    expected = {"rnn_tanh", "rnn_relu", "lstm", "vanilla", "nig", "nfg", "nog", "niaf", "noaf", "np", "cifg",
                "fgr", "gru", "gru_cho", "mut1", "mut2", "mut3", "clockwork", "dglstm"}
    assert expected <= set(CELLS)


def test_unknown_cell_lists_valid_names():
    with pytest.raises(ValueError, match="unknown cell 'lstn'.*valid names:.*cifg.*vanilla"):
        build_cell("lstn", 3, 4)


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        build_cell("lstm", 3, bad)


def test_unknown_option_is_a_clear_error():
    with pytest.raises(ValueError, match="cell 'gru'.*num_modules"):
        build_cell("gru", 3, 4, num_modules=4)


def test_wrong_input_size_names_expected_shape():
    cell = build_cell("vanilla", 3, 4)
    with pytest.raises(ValueError, match="expected input with 3 features"):
        cell(torch.randn(2, 5))


@pytest.mark.parametrize("name", ALL)
def test_gradcheck_every_cell(name):
    cell = make(name)
    x, state, below = step_inputs(cell)
    params = list(cell.params().items())

    def f(x, *rest):
        st = rest[: len(state)]
        b = rest[len(state)]
        p = dict(zip([n for n, _ in params], rest[len(state) + 1:]))
        h, new = cell.step(p, cell.input_projection(p, x), st, t=0, below=b if cell.depth_gated else None)
        return (h,) + tuple(new)

    inputs = (x.requires_grad_(), *[s.requires_grad_() for s in state], below.requires_grad_(),
              *[p.detach().clone().requires_grad_() for _, p in params])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5)


def test_vanilla_has_peepholes_that_matter():
    cell = make("vanilla")
    assert cell.params()["weight_ph"].shape == (3, 4)  # i, f, o
    x, (h0, c0), _ = step_inputs(cell)
    p = cell.params()
    h_a, _ = cell.step(p, cell.input_projection(p, x), (h0, c0), 0)
    h_b, _ = cell.step(p, cell.input_projection(p, x), (h0, c0 + 1.0), 0)
    # i and f read c_{t-1}: changing only c_{t-1} changes the gates (not just the cell update)
    p0 = dict(p, weight_ph=torch.zeros_like(p["weight_ph"]))
    ha0, _ = cell.step(p0, cell.input_projection(p0, x), (h0, c0), 0)
    assert not torch.allclose(h_a, ha0)
    assert not torch.allclose(h_a, h_b)


def test_output_gate_peeks_at_new_cell_not_old():
    cell = make("vanilla")
    x, (h0, c0), _ = step_inputs(cell)
    p = dict(cell.params())
    H = 4
    ph = p["weight_ph"].clone()
    ph[:2] = 0  # only the output gate's peephole
    p["weight_ph"] = ph
    rec = {}
    h, (_, c) = cell.step(p, cell.input_projection(p, x), (h0, c0), 0, record=rec)
    pre = cell.input_projection(p, x) + torch.nn.functional.linear(h0, p["weight_hh"], p["bias_hh"])
    o_expected = torch.sigmoid(pre[:, 3 * H:] + ph[2] * c)
    torch.testing.assert_close(rec["o"], o_expected)
    torch.testing.assert_close(h, o_expected * torch.tanh(c))


def test_np_has_no_peepholes_and_equals_lstm_cell():
    cell = make("np")
    assert "weight_ph" not in cell.params()
    ref = torch.nn.LSTMCell(3, 4).double()
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, n).copy_(cell.params()[n])
    x, (h0, c0), _ = step_inputs(cell)
    h, c = cell(x, (h0, c0))
    h_ref, c_ref = ref(x, (h0, c0))
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c, c_ref)


def test_cifg_has_no_forget_parameters_and_f_is_one_minus_i():
    cell = make("cifg")
    H = 4
    assert cell.blocks == ("i", "g", "o")
    assert cell.params()["weight_ih"].shape == (3 * H, 3)
    assert cell.params()["weight_ph"].shape == (2, H)  # i and o only
    x, state, _ = step_inputs(cell)
    rec = {}
    p = cell.params()
    _, (h, c) = cell.step(p, cell.input_projection(p, x), state, 0, record=rec)
    torch.testing.assert_close(rec["f"], 1 - rec["i"])
    torch.testing.assert_close(c, rec["f"] * state[1] + rec["i"] * rec["g"])


@pytest.mark.parametrize("name,gate", [("nig", "i"), ("nfg", "f"), ("nog", "o")])
def test_missing_gate_is_one(name, gate):
    cell = make(name)
    assert gate not in cell.blocks and cell.params()["weight_ih"].shape[0] == 3 * 4
    x, (h0, c0), _ = step_inputs(cell)
    rec = {}
    p = cell.params()
    h, (_, c) = cell.step(p, cell.input_projection(p, x), (h0, c0), 0, record=rec)
    assert gate not in rec
    i = rec.get("i", 1.0)
    f = rec.get("f", 1.0)
    o = rec.get("o", 1.0)
    torch.testing.assert_close(c, f * c0 + i * rec["g"])
    torch.testing.assert_close(h, o * torch.tanh(c))


def test_niaf_and_noaf_drop_activations():
    for name in ("niaf", "noaf"):
        cell = make(name)
        x, (h0, c0), _ = step_inputs(cell)
        rec = {}
        p = cell.params()
        pre = cell.input_projection(p, x) + torch.nn.functional.linear(h0, p["weight_hh"], p["bias_hh"])
        h, (_, c) = cell.step(p, cell.input_projection(p, x), (h0, c0), 0, record=rec)
        if name == "niaf":
            torch.testing.assert_close(rec["g"], pre[:, 8:12])  # g(x) = x
            torch.testing.assert_close(h, rec["o"] * torch.tanh(c))
        else:
            torch.testing.assert_close(h, rec["o"] * c)  # h(x) = x


def test_fgr_gate_recurrence_uses_previous_gates():
    cell = make("fgr")
    assert cell.params()["weight_gh"].shape == (12, 12)  # 9 H x H blocks
    assert cell.state_names == ("h", "c", "a")
    x, state, _ = step_inputs(cell)
    p = cell.params()
    h1, s1 = cell.step(p, cell.input_projection(p, x), state, 0)
    other = (state[0], state[1], state[2] + 1.0)
    h2, _ = cell.step(p, cell.input_projection(p, x), other, 0)
    assert not torch.allclose(h1, h2)
    rec = {}
    cell.step(p, cell.input_projection(p, x), state, 0, record=rec)
    torch.testing.assert_close(s1[2], torch.cat([rec["i"], rec["f"], rec["o"]], -1))


@pytest.mark.parametrize("name", sorted(set(LSTM_VARIANTS) - {"nfg", "cifg"}) + ["dglstm"])
def test_forget_bias_sets_forget_gate_bias(name):
    cell = make(name, forget_bias=1.0, H=4)
    p = cell.params()
    k = 1 if name == "dglstm" else cell.blocks.index("f")
    assert torch.all(p["bias_ih"][k * 4:(k + 1) * 4] == 1.0)
    assert torch.all(p["bias_hh"][k * 4:(k + 1) * 4] == 0.0)


def test_forget_bias_cifg_and_nfg():
    cell = make("cifg", forget_bias=1.0)
    assert torch.all(cell.params()["bias_ih"][:4] == -1.0)  # f = 1 - sigma(a_i): b_i = -1 gives b_f = +1
    with pytest.raises(ValueError, match="'nfg' has no forget gate"):
        build_cell("nfg", 3, 4, forget_bias=1.0)
    with pytest.raises(ValueError, match="'rnn_tanh' has no forget gate"):
        build_cell("rnn_tanh", 3, 4, forget_bias=1.0)


@pytest.mark.parametrize("name", GRU_FAMILY)
def test_forget_bias_gru_family_biases_the_keep_gate(name):
    """GRU keeps with z (h' = (1-z) n + z h); MUT keeps with 1 - z (h' = n z + h (1-z))."""
    cell = make(name, forget_bias=3.0, I=4, H=4)
    x, (h0,), _ = step_inputs(cell)
    p = cell.params()
    with torch.no_grad():  # make the weights tiny so the bias decides the gate
        for w in p.values():
            if w.dim() == 2:
                w.mul_(1e-3)
    rec = {}
    cell.step(p, cell.input_projection(p, x), (h0,), 0, record=rec)
    keep = rec["z"] if name.startswith("gru") else 1 - rec["z"]
    assert keep.min() > 0.94  # sigmoid(3) = 0.953


def test_gru_matches_torch_and_cho_differs():
    torch.manual_seed(0)
    ref = torch.nn.GRUCell(3, 4).double()
    for name in ("gru", "gru_cho"):
        cell = make(name)
        with torch.no_grad():
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, n).copy_(cell.params()[n])
        x, (h0,), _ = step_inputs(cell)
        same = torch.allclose(cell(x, h0), ref(x, h0))
        assert same == (name == "gru")


def test_gru_cho_resets_before_matmul():
    cell = make("gru_cho")
    x, (h0,), _ = step_inputs(cell)
    p = cell.params()
    H = 4
    W, b = p["weight_hh"], p["bias_hh"]
    xw = cell.input_projection(p, x)
    r = torch.sigmoid(xw[:, :H] + h0 @ W[:H].T + b[:H])
    z = torch.sigmoid(xw[:, H:2 * H] + h0 @ W[H:2 * H].T + b[H:2 * H])
    n = torch.tanh(xw[:, 2 * H:] + (r * h0) @ W[2 * H:].T + b[2 * H:])
    torch.testing.assert_close(cell(x, h0), (1 - z) * n + z * h0)


@pytest.mark.parametrize("name", ["mut1", "mut2", "mut3"])
def test_mut_equations(name):
    H = 4
    cell = make(name, I=H, H=H)  # equal sizes: the paper's identity terms, no projection
    assert not cell.projected
    x, (h,), _ = step_inputs(cell)
    p = cell.params()
    Wi = dict(zip(cell.ih_blocks, p["weight_ih"].split(H)))
    bi = dict(zip(cell.ih_blocks, p["bias_ih"].split(H)))
    Wh = dict(zip(cell.hh_blocks, p["weight_hh"].split(H)))
    bh = dict(zip(cell.hh_blocks, p["bias_hh"].split(H)))
    lin = torch.nn.functional.linear
    if name == "mut1":
        z = torch.sigmoid(lin(x, Wi["z"], bi["z"]))
        r = torch.sigmoid(lin(x, Wi["r"], bi["r"]) + lin(h, Wh["r"], bh["r"]))
        hn = torch.tanh(lin(r * h, Wh["n"], bh["n"]) + torch.tanh(x)) * z + h * (1 - z)
    elif name == "mut2":
        z = torch.sigmoid(lin(x, Wi["z"], bi["z"]) + lin(h, Wh["z"], bh["z"]))
        r = torch.sigmoid(x + lin(h, Wh["r"], bh["r"]))
        hn = torch.tanh(lin(r * h, Wh["n"], bh["n"]) + lin(x, Wi["n"], bi["n"])) * z + h * (1 - z)
    else:
        z = torch.sigmoid(lin(x, Wi["z"], bi["z"]) + lin(torch.tanh(h), Wh["z"], bh["z"]))
        r = torch.sigmoid(lin(x, Wi["r"], bi["r"]) + lin(h, Wh["r"], bh["r"]))
        hn = torch.tanh(lin(r * h, Wh["n"], bh["n"]) + lin(x, Wi["n"], bi["n"])) * z + h * (1 - z)
    torch.testing.assert_close(cell(x, h), hn)


def test_mut_projects_when_sizes_differ():
    assert make("mut1", I=3, H=4).projected and make("mut2", I=3, H=4).projected
    assert not make("mut3", I=3, H=4).projected


def test_clockwork_ticks_and_slow_feeds_fast():
    cell = make("clockwork", I=3, H=8, num_modules=4)  # modules of 2 units, periods 1, 2, 4, 8
    assert cell.periods == (1, 2, 4, 8)
    x, (h0,), _ = step_inputs(cell)
    p = cell.params()
    for t, active in [(0, [0, 1, 2, 3]), (1, [0]), (2, [0, 1]), (4, [0, 1, 2]), (6, [0, 1]), (8, [0, 1, 2, 3])]:
        h, _ = cell.step(p, cell.input_projection(p, x), (h0,), t)
        changed = [(h[:, 2 * k:2 * k + 2] != h0[:, 2 * k:2 * k + 2]).all().item() for k in range(4)]
        assert changed == [k in active for k in range(4)], t
    # effective recurrent matrix: module k reads only modules j >= k
    W = (p["weight_hh"] * cell.hh_mask).detach()
    for k in range(4):
        for j in range(4):
            block = W[2 * k:2 * k + 2, 2 * j:2 * j + 2]
            assert (block.abs().sum() > 0) == (j >= k)


def test_clockwork_bad_modules():
    with pytest.raises(ValueError, match="divisible"):
        build_cell("clockwork", 3, 10, num_modules=4)


def test_dglstm_depth_gate():
    cell = make("dglstm")
    x, (h0, c0), below = step_inputs(cell)
    p = cell.params()
    rec = {}
    h, (_, c) = cell.step(p, cell.input_projection(p, x), (h0, c0), 0, below=below, record=rec)
    torch.testing.assert_close(c, rec["f"] * c0 + rec["i"] * rec["g"] + rec["d"] * below)
    xw = cell.input_projection(p, x)
    d = torch.sigmoid(xw[:, 16:] + p["weight_cd"] * c0 + p["weight_ld"] * below)
    torch.testing.assert_close(rec["d"], d)
    first = build_cell("dglstm", 3, 4)  # layer 1: a plain LSTM, no depth gate
    assert "weight_ld" not in first.params() and first.params()["weight_ih"].shape == (16, 3)
    with pytest.raises(ValueError, match="needs that layer's cell state"):
        cell.step(p, xw, (h0, c0), 0, below=None)
