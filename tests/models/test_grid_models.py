"""Tests of the grid networks in recur_attn.models.grid."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recur_attn.models.grid import (
    FeedForwardNet,
    GridLSTM1D,
    GridLSTM2D,
    GridLSTM3D,
    GridSequenceModel,
    count_parameters,
)


def _lstm(z, m):
    i, f, g, o = z.chunk(4, -1)
    c = torch.sigmoid(f) * m + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def test_grid_1d_tied_equals_an_lstm_cell_iterated_over_depth():
    torch.manual_seed(0)
    k, H, L = 10, 6, 4
    net = GridLSTM1D(k, 3, hidden_size=H, depth=L, tied=True)
    cell = nn.LSTMCell(H, H)
    with torch.no_grad():
        cell.weight_ih.copy_(net.block.copies[0].weight)
        cell.bias_ih.copy_(net.block.copies[0].bias)
        cell.bias_hh.zero_()
    x = torch.rand(5, k)
    h, m = net.proj(x), torch.zeros(5, H)
    for _ in range(L):
        h, m = cell(h, (torch.zeros(5, H), m))  # the 1-D block reads only its own hidden vector
    torch.testing.assert_close(net(x), net.head(h))


def test_grid_1d_tying_parameter_count_and_identity():
    tied = GridLSTM1D(12, 2, hidden_size=16, depth=7, tied=True)
    untied = GridLSTM1D(12, 2, hidden_size=16, depth=7, tied=False)
    block = 4 * 16 * 16 + 4 * 16
    assert count_parameters(untied) - count_parameters(tied) == 6 * block
    assert count_parameters(tied) == GridLSTM1D.param_count(12, 2, 16, 7, tied=True)
    assert count_parameters(untied) == GridLSTM1D.param_count(12, 2, 16, 7, tied=False)
    assert all(tied.block.weights_at((layer,)) is tied.block.copies[0] for layer in range(7))
    assert len({id(untied.block.weights_at((layer,)).weight) for layer in range(7)}) == 7
    # an untied network really computes with different weights per layer
    with torch.no_grad():
        untied.block.copies[3].weight.zero_()
    x = torch.rand(2, 12)
    out1 = untied(x)
    with torch.no_grad():
        untied.block.copies[3].weight.normal_()
    assert not torch.allclose(out1, untied(x))


def test_grid_1d_options_and_errors():
    net = GridLSTM1D(8, 2, hidden_size=8, depth=3, init_memory="input", input_every_layer=True,
                     input_activation="tanh", init_scale=2.0)
    assert net(torch.rand(3, 8)).shape == (3, 2)
    assert net.block.copies[0].weight.shape == (32, 8 + 8)
    ref = GridLSTM1D(8, 2, hidden_size=8, depth=3)
    assert net.proj.weight.abs().max() > 1 / 8 ** 0.5  # scaled beyond U(-1/sqrt(H), 1/sqrt(H))
    assert ref.proj.weight.abs().max() <= 1 / 8 ** 0.5
    with pytest.raises(ValueError, match="valid choices"):
        GridLSTM1D(8, 2, init_memory="random")
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        ref(torch.rand(3, 7))


def test_feed_forward_matches_parameter_count():
    target = GridLSTM1D.param_count(32, 2, 64)
    for act in ("tanh", "relu"):
        ff = FeedForwardNet(32, 2, depth=6, activation=act, grid_hidden_size=64)
        n = count_parameters(ff)
        assert n <= target
        assert FeedForwardNet.param_count(ff.hidden_size + 1, 32, 2, 6) > target
        assert ff(torch.rand(4, 32)).shape == (4, 2)
    with pytest.raises(ValueError, match="exactly one"):
        FeedForwardNet(4, 2, hidden_size=3, num_params=100)


def test_grid_2d_lengths_and_layout():
    torch.manual_seed(1)
    net = GridLSTM2D(3, 5, num_layers=2)
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 2, 4])
    out, (h, m) = net(x, lengths=lengths)
    assert out.shape == (3, 6, 5) and h.shape == (2, 3, 5) and m.shape == (2, 3, 5)
    for b in range(3):
        n = int(lengths[b])
        out_b, (h_b, m_b) = net(x[b:b + 1, :n])
        torch.testing.assert_close(out[b:b + 1, :n], out_b)
        torch.testing.assert_close(h[:, b:b + 1], h_b)
        torch.testing.assert_close(m[:, b:b + 1], m_b)
        assert torch.all(out[b, n:] == 0)
    # time-major gives the same numbers; a given state is continued
    tm = GridLSTM2D(3, 5, num_layers=2, batch_first=False)
    tm.load_state_dict(net.state_dict())
    out_t, _ = tm(x.transpose(0, 1))
    out_full, state = net(x)
    torch.testing.assert_close(out_t.transpose(0, 1), out_full)
    out_a, st = net(x[:, :3])
    out_b, _ = net(x[:, 3:], st)
    torch.testing.assert_close(torch.cat([out_a, out_b], 1), out_full)


def test_grid_2d_one_step_matches_hand_computation_with_depth_priority():
    torch.manual_seed(2)
    net = GridLSTM2D(2, 4, num_layers=1, priority="depth")
    x = torch.randn(3, 1, 2)
    out, (h, m) = net(x)
    blk = net.block
    hd0 = net.proj(x[:, 0])
    zeros = torch.zeros(3, 4)
    ht, mt = _lstm(torch.cat([zeros, hd0], 1) @ blk.dim_weight(0, (0, 0)).T + blk.dim_bias(0, (0, 0)), zeros)
    hd, _ = _lstm(torch.cat([ht, hd0], 1) @ blk.dim_weight(1, (0, 0)).T + blk.dim_bias(1, (0, 0)), zeros)
    torch.testing.assert_close(out[:, 0], hd)
    torch.testing.assert_close(h[0], ht)
    torch.testing.assert_close(m[0], mt)


def test_grid_2d_tied_depth_shares_weights():
    tied = GridLSTM2D(3, 8, num_layers=4, tied=True)
    untied = GridLSTM2D(3, 8, num_layers=4, tied=False)
    assert tied.block.num_copies == 1 and untied.block.num_copies == 4
    assert count_parameters(untied) - count_parameters(tied) == 3 * (2 * 4 * 8 * 16 + 2 * 4 * 8)


def test_grid_sequence_model_readouts():
    last = GridSequenceModel(3, 4, hidden_size=6, num_layers=2, readout="last")
    allr = GridSequenceModel(3, 4, hidden_size=6, num_layers=2, readout="all")
    x = torch.randn(2, 5, 3)
    assert last(x, torch.tensor([5, 3])).shape == (2, 4)
    assert allr(x).shape == (2, 5, 4)


def _grid3d_reference(net: GridLSTM3D, x: torch.Tensor) -> torch.Tensor:
    """Raster-order loop over every block (no wavefront batching)."""
    pv = net.proj(net.patches(x))
    B, R, S, H = pv.shape
    zeros = torch.zeros(B, H)
    hd = {(r, s): pv[:, r, s] for r in range(R) for s in range(S)}
    md = {(r, s): zeros for r in range(R) for s in range(S)}
    for layer in range(net.depth):
        hr, mr, hc, mc = {}, {}, {}, {}
        for r in range(R):
            for s in range(S):
                h_in = [hr.get((r - 1, s), zeros), hc.get((r, s - 1), zeros), hd[(r, s)]]
                m_in = [mr.get((r - 1, s), zeros), mc.get((r, s - 1), zeros), md[(r, s)]]
                (a, b, c), (ma, mb, mc_) = net.block(h_in, m_in, position=(r, s, layer))
                hr[(r, s)], hc[(r, s)], hd[(r, s)] = a, b, c
                mr[(r, s)], mc[(r, s)], md[(r, s)] = ma, mb, mc_
    top = torch.stack([hd[(r, s)] for r in range(R) for s in range(S)], 1)
    return net.head(top.mean(1))


@pytest.mark.parametrize("tied", [False, True])
def test_grid_3d_wavefront_equals_raster_loop(tied):
    torch.manual_seed(3)
    net = GridLSTM3D((6, 4), num_classes=5, channels=2, patch_size=2, hidden_size=4, depth=2, tied=tied)
    x = torch.rand(3, 2, 6, 4)
    torch.testing.assert_close(net(x), _grid3d_reference(net, x))
    assert net.block.num_copies == (1 if tied else 2)


def test_grid_3d_input_checks_and_grads():
    net = GridLSTM3D(8, 10, patch_size=2, hidden_size=4, depth=1)
    out = net(torch.rand(2, 8, 8))  # a channel axis is added for one-channel images
    out.sum().backward()
    assert net.block.copies[0].weight.grad is not None
    with pytest.raises(ValueError, match="expects images"):
        net(torch.rand(2, 1, 9, 8))
    with pytest.raises(ValueError, match="divide"):
        GridLSTM3D(8, 10, patch_size=3)


def test_grid_charlm_and_density_use_a_grid_recurrence():
    from recur_attn.models.grid import GridCharLM, GridDensityModel

    lm = GridCharLM(11, embedding_size=4, hidden_size=6, num_layers=2, tied=True)
    assert isinstance(lm.rnn, GridLSTM2D) and lm.rnn.block.num_copies == 1
    x = torch.randint(0, 11, (3, 5))
    logits, state = lm(x)
    assert logits.shape == (3, 5, 11) and state[0].shape == (2, 3, 6) and state[1].shape == (2, 3, 6)
    # carrying the state equals one long pass
    full, _ = lm(torch.cat([x, x], 1))
    second, _ = lm(x, state)
    torch.testing.assert_close(full[:, 5:], second)
    reset = lm.reset_state(state, torch.tensor([True, False, True]))
    assert torch.all(reset[0][:, 0] == 0) and torch.equal(reset[0][:, 1], state[0][:, 1])
    dm = GridDensityModel(7, 7, hidden_size=5, num_layers=2)
    assert dm(torch.rand(2, 4, 7), torch.tensor([4, 2])).shape == (2, 4, 7)
    with pytest.raises(ValueError, match="cell must be 'lstm'"):
        GridCharLM(11, cell="gru")
