"""SequenceModel: read-outs at each sequence's true end, per-step outputs, shapes and errors."""

from __future__ import annotations

import pytest
import torch

from recur_attn.models import SequenceModel


def _model(**kw):
    torch.manual_seed(0)
    args = dict(input_size=3, output_size=2, cell="lstm", hidden_size=5)
    args.update(kw)
    return SequenceModel(**args)


def test_last_readout_uses_each_sequences_true_end():
    m = _model()
    x = torch.randn(3, 7, 3)
    lengths = torch.tensor([7, 4, 1])
    y = m(x, lengths)
    assert y.shape == (3, 2)
    for b, n in enumerate(lengths.tolist()):
        alone = m(x[b:b + 1, :n])  # the sequence on its own, no padding
        torch.testing.assert_close(y[b:b + 1], alone, atol=1e-6, rtol=1e-5)
    # padding content does not matter
    x2 = x.clone()
    x2[1, 4:] = 100.0
    torch.testing.assert_close(m(x2, lengths), y)


def test_bidirectional_last_readout_equals_unpadded_run():
    m = _model(cell="gru", bidirectional=True, num_layers=2)
    x = torch.randn(2, 6, 3)
    lengths = torch.tensor([6, 3])
    y = m(x, lengths)
    alone = m(x[1:2, :3])
    torch.testing.assert_close(y[1:2], alone, atol=1e-6, rtol=1e-5)
    # the features are [forward at the end, backward at t=0], 2H wide
    assert m.features(x, lengths).shape == (2, 10)


def test_all_readout_gives_every_step():
    m = _model(readout="all", cell="cifg", cell_kwargs={"forget_bias": 1.0})
    x = torch.randn(4, 5, 3)
    assert m(x).shape == (4, 5, 2)
    out, _ = m.rnn(x)
    torch.testing.assert_close(m(x), m.head(out))


def test_gradients_reach_all_parameters():
    m = _model(cell="clockwork", hidden_size=8, cell_kwargs={"num_modules": 2})
    m(torch.randn(2, 9, 3), torch.tensor([9, 5])).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name


@pytest.mark.parametrize("kw,msg", [
    ({"readout": "first"}, "readout must be one of"),
    ({"output_size": 0}, "output_size must be a positive integer"),
    ({"hidden_size": 0}, "hidden_size must be a positive integer"),
    ({"cell": "lsmt"}, "valid names"),
])
def test_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _model(**kw)


def test_wrong_input_width_names_expected_shape():
    m = _model()
    with pytest.raises(ValueError, match=r"expects x of shape \(B, T, 3\), got \(2, 4, 5\)"):
        m(torch.randn(2, 4, 5))
