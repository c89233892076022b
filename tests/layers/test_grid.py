"""Tests of the Grid LSTM block (recur_attn.layers.grid.GridLSTM)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recur_attn.layers.grid import GridLSTM


def _copy_lstm_cell_into_block(block: GridLSTM, cell: nn.LSTMCell) -> None:
    """Block weight = [W_ih | W_hh], bias = b_ih + b_hh (H = [x; h])."""
    with torch.no_grad():
        block.copies[0].weight.copy_(torch.cat([cell.weight_ih, cell.weight_hh], dim=1))
        block.copies[0].bias.copy_(cell.bias_ih + cell.bias_hh)


def test_one_dimensional_block_equals_lstm_cell_outputs_and_grads():
    torch.manual_seed(0)
    I, H, B = 5, 7, 4
    cell = nn.LSTMCell(I, H)
    block = GridLSTM(1, H, input_size=I)
    _copy_lstm_cell_into_block(block, cell)
    x = torch.randn(B, I, requires_grad=True)
    h = torch.randn(B, H, requires_grad=True)
    m = torch.randn(B, H, requires_grad=True)
    h_ref, c_ref = cell(x, (h, m))
    (h_new,), (m_new,) = block([h], [m], x=x)
    torch.testing.assert_close(h_new, h_ref)
    torch.testing.assert_close(m_new, c_ref)

    wh, wc = torch.randn(B, H), torch.randn(B, H)
    ref_grads = torch.autograd.grad((h_ref * wh).sum() + (c_ref * wc).sum(),
                                    [x, h, m, cell.weight_ih, cell.weight_hh, cell.bias_ih])
    got = torch.autograd.grad((h_new * wh).sum() + (m_new * wc).sum(),
                              [x, h, m, block.copies[0].weight, block.copies[0].bias])
    for a, b in zip(got[:3], ref_grads[:3]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got[3], torch.cat([ref_grads[3], ref_grads[4]], dim=1))
    torch.testing.assert_close(got[4], ref_grads[5])


def test_block_without_input_equals_lstm_cell_on_its_hidden_vector():
    # N = 1, no external input: H = h, so (h', m') = LSTM(h, m) = LSTMCell(x=h, (0, m)) with W_hh unused
    torch.manual_seed(1)
    H, B = 6, 3
    cell = nn.LSTMCell(H, H)
    block = GridLSTM(1, H)
    with torch.no_grad():
        block.copies[0].weight.copy_(cell.weight_ih)
        block.copies[0].bias.copy_(cell.bias_ih + cell.bias_hh)
    h, m = torch.randn(B, H), torch.randn(B, H)
    h_ref, c_ref = cell(h, (torch.zeros(B, H), m))
    (h_new,), (m_new,) = block([h], [m])
    torch.testing.assert_close(h_new, h_ref)
    torch.testing.assert_close(m_new, c_ref)


def test_tying_shares_parameters_identity_and_count():
    H, N, L = 8, 2, 5
    tied = GridLSTM(N, H, tied=(True, True), grid_size=(None, L))
    untied = GridLSTM(N, H, tied=(True, False), grid_size=(None, L))
    per_copy = N * 4 * H * (N * H) + N * 4 * H
    assert sum(p.numel() for p in tied.parameters()) == per_copy
    assert sum(p.numel() for p in untied.parameters()) == L * per_copy
    # identity: every depth position of the tied block uses the very same Parameter objects
    w0 = tied.weights_at((0, 0))
    for t in range(3):
        for layer in range(L):
            w = tied.weights_at((t, layer))
            assert w is w0 and w.weight is w0.weight and w.bias is w0.bias
    # untied along depth: distinct parameters per layer; tied along time: same for every t
    ws = [untied.weights_at((0, layer)) for layer in range(L)]
    assert len({id(w.weight) for w in ws}) == L
    assert untied.weights_at((7, 2)) is untied.weights_at((0, 2))
    # and the outputs differ between layers of the untied block, not of the tied block
    h = [torch.randn(2, H) for _ in range(N)]
    out_u = [untied(h, None, position=(0, layer))[0][0] for layer in (0, 1)]
    out_t = [tied(h, None, position=(0, layer))[0][0] for layer in (0, 1)]
    assert not torch.allclose(out_u[0], out_u[1])
    torch.testing.assert_close(out_t[0], out_t[1])
    # gradients of a tied block accumulate into the one shared parameter
    loss = sum(tied(h, None, position=(0, layer))[0][1].sum() for layer in range(L))
    loss.backward()
    assert tied.copies[0].weight.grad is not None and len(tied.copies) == 1


def test_untied_dimension_needs_position_in_range():
    block = GridLSTM(1, 4, tied=False, grid_size=3)
    h = [torch.randn(2, 4)]
    with pytest.raises(ValueError, match="position"):
        block(h)
    with pytest.raises(ValueError, match="out of range"):
        block(h, position=(3,))
    with pytest.raises(ValueError, match="grid_size"):
        GridLSTM(1, 4, tied=False)


def test_priority_dimension_reads_new_hidden_vectors():
    torch.manual_seed(2)
    H, B = 5, 3
    block = GridLSTM(2, H, priority=(1,))
    h = [torch.randn(B, H), torch.randn(B, H)]
    m = [torch.randn(B, H), torch.randn(B, H)]
    h_new, m_new = block(h, m)
    W, b = block.copies[0].weight, block.copies[0].bias
    w0, b0 = block.dim_weight(0), block.dim_bias(0)
    w1, b1 = block.dim_weight(1), block.dim_bias(1)
    assert w0.data_ptr() == W.data_ptr()  # views of the one parameter, dimension 0 first

    def lstm(z, mk):
        i, f, g, o = z.chunk(4, 1)
        c = torch.sigmoid(f) * mk + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    h0_ref, m0_ref = lstm(torch.cat(h, 1) @ w0.T + b0, m[0])  # old vectors
    h1_ref, m1_ref = lstm(torch.cat([h0_ref, h[1]], 1) @ w1.T + b1, m[1])  # NEW h_0
    h1_old, _ = lstm(torch.cat(h, 1) @ w1.T + b1, m[1])
    torch.testing.assert_close(h_new[0], h0_ref)
    torch.testing.assert_close(h_new[1], h1_ref)
    torch.testing.assert_close(m_new[1], m1_ref)
    assert not torch.allclose(h_new[1], h1_old)
    # the priority output depends on the other dimension's new vector, which depends on m_0
    m0 = m[0].clone().requires_grad_(True)
    h_new, _ = block(h, [m0, m[1]])
    (g,) = torch.autograd.grad(h_new[1].sum(), m0)
    assert g.abs().sum() > 0
    # without priority, dimension 1 cannot see m_0 at all
    plain = GridLSTM(2, H)
    h_new, _ = plain(h, [m0, m[1]])
    (g,) = torch.autograd.grad(h_new[1].sum(), m0, allow_unused=True)
    assert g is None or g.abs().sum() == 0


def test_non_lstm_dimensions():
    torch.manual_seed(3)
    H, B = 4, 2
    block = GridLSTM(3, H, kinds=("tanh", "relu", "lstm"), input_size=3)
    x = torch.randn(B, 3)
    h = [torch.randn(B, H) for _ in range(3)]
    m = [None, None, torch.randn(B, H)]
    h_new, m_new = block(h, m, x=x)
    Hcat = torch.cat([x] + h, 1)
    torch.testing.assert_close(h_new[0], torch.tanh(Hcat @ block.dim_weight(0).T + block.dim_bias(0)))
    torch.testing.assert_close(h_new[1], torch.relu(Hcat @ block.dim_weight(1).T + block.dim_bias(1)))
    assert m_new[0] is None and m_new[1] is None and m_new[2].shape == (B, H)
    assert block.copies[0].weight.shape == (H + H + 4 * H, 3 + 3 * H)
    with pytest.raises(ValueError, match="valid choices"):
        GridLSTM(2, H, kinds=("lstm", "sigmoidish"))


def test_forget_bias_and_shape_errors():
    block = GridLSTM(2, [3, 5], forget_bias=1.5)
    assert torch.all(block.dim_bias(0)[3:6] == 1.5) and torch.all(block.dim_bias(1)[5:10] == 1.5)
    with pytest.raises(ValueError, match=r"h\[1\]"):
        block([torch.randn(2, 3), torch.randn(2, 4)])
    with pytest.raises(ValueError, match="input"):
        block([torch.randn(2, 3), torch.randn(2, 5)], x=torch.randn(2, 1))


def test_gradcheck_float64():
    torch.manual_seed(4)
    block = GridLSTM(3, [3, 2, 3], kinds=("lstm", "tanh", "lstm"), priority=(2,), input_size=2).double()
    B = 2
    x = torch.randn(B, 2, dtype=torch.float64, requires_grad=True)
    h = [torch.randn(B, s, dtype=torch.float64, requires_grad=True) for s in (3, 2, 3)]
    m0 = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    m2 = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    W, b = block.copies[0].weight, block.copies[0].bias

    def f(x, h0, h1, h2, m0, m2, W, b):
        hn, mn = block([h0, h1, h2], [m0, None, m2], x=x)
        return (*hn, mn[0], mn[2])

    assert torch.autograd.gradcheck(f, (x, *h, m0, m2, W, b))
