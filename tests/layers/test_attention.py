"""AdditiveAttention / MultiplicativeAttention: masking, normalisation, hand computation, gradients."""

import math

import pytest
import torch

from recur_attn.layers import AdditiveAttention, MultiplicativeAttention, masked_softmax


def _inputs(B=3, S=5, Q=4, K=6, N=None, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(B, S, K, generator=g, dtype=dtype)
    shape = (B, Q) if N is None else (B, N, Q)
    query = torch.randn(*shape, generator=g, dtype=dtype)
    lengths = torch.tensor([S, 2, 1][:B])
    mask = torch.arange(S)[None, :] < lengths[:, None]
    return query, keys, mask


MODULES = [
    lambda: AdditiveAttention(query_size=4, key_size=6, attention_size=7),
    lambda: MultiplicativeAttention(query_size=4, key_size=6, method="general"),
    lambda: MultiplicativeAttention(query_size=4, key_size=6, method="general", scaled=True),
]


@pytest.mark.parametrize("make", MODULES)
@pytest.mark.parametrize("N", [None, 3])
def test_masked_weights_are_zero_and_normalised(make, N):
    torch.manual_seed(0)
    att = make()
    q, k, mask = _inputs(N=N)
    ctx, w = att(q, k, mask=mask)
    if N is None:
        assert w.shape == (3, 5) and ctx.shape == (3, 6)
        wm = w
    else:
        assert w.shape == (3, N, 5) and ctx.shape == (3, N, 6)
        wm = w
    m = mask if N is None else mask[:, None, :].expand_as(w)
    assert torch.all(wm[~m] == 0.0)  # exactly zero
    assert torch.allclose(wm.sum(-1), torch.ones(wm.shape[:-1]), atol=1e-6)
    assert torch.all(wm[m] > 0)
    # padded keys do not change anything: fill them with garbage
    k2 = k.clone()
    k2[~mask] = 1e4
    ctx2, w2 = att(q, k2, mask=mask)
    assert torch.allclose(w, w2, atol=1e-6) and torch.allclose(ctx, ctx2, atol=1e-5)


@pytest.mark.parametrize("make", MODULES)
def test_batch_of_queries_equals_one_at_a_time(make):
    torch.manual_seed(1)
    att = make()
    q, k, mask = _inputs(N=4, seed=1)
    kp = att.project_keys(k)
    ctx, w = att(q, k, mask=mask, keys_proj=kp)
    for n in range(4):
        c1, w1 = att(q[:, n], k, mask=mask)
        assert torch.allclose(ctx[:, n], c1, atol=1e-6) and torch.allclose(w[:, n], w1, atol=1e-6)


def test_fully_masked_row_is_an_error_not_nan():
    att = AdditiveAttention(4, 6, 5)
    q, k, mask = _inputs()
    mask[1] = False
    with pytest.raises(ValueError, match="no True entry"):
        att(q, k, mask=mask)


def test_large_scores_do_not_overflow():
    scores = torch.tensor([[1e4, 1e4 - 1.0, -1e4]])
    w = masked_softmax(scores, torch.tensor([[True, True, True]]))
    assert torch.isfinite(w).all()
    assert torch.allclose(w[0, :2], torch.softmax(torch.tensor([1.0, 0.0]), 0), atol=1e-6)


def test_additive_equals_hand_computation():
    att = AdditiveAttention(query_size=2, key_size=2, attention_size=2)
    with torch.no_grad():
        att.query_proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.5, -1.0]]))  # W
        att.key_proj.weight.copy_(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))  # U
        att.key_proj.bias.copy_(torch.tensor([0.1, -0.2]))  # b
        att.v.weight.copy_(torch.tensor([[1.0, -2.0]]))  # v
    q = torch.tensor([[1.0, 2.0]])
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]]])
    mask = torch.tensor([[True, True, False]])
    ctx, w = att(q, keys, mask=mask)
    # by hand: W q = (1, -1.5); U k1 + b = (0.1, 1.8); U k2 + b = (1.1, -0.2)
    e1 = math.tanh(1 + 0.1) * 1.0 - 2.0 * math.tanh(-1.5 + 1.8)
    e2 = math.tanh(1 + 1.1) * 1.0 - 2.0 * math.tanh(-1.5 - 0.2)
    a1 = math.exp(e1) / (math.exp(e1) + math.exp(e2))
    a2 = 1 - a1
    assert torch.allclose(w, torch.tensor([[a1, a2, 0.0]]), atol=1e-6)
    assert torch.allclose(ctx, torch.tensor([[a1 * 1.0, a2 * 1.0]]), atol=1e-6)


def test_multiplicative_equals_hand_computation():
    q = torch.tensor([[1.0, -1.0]])
    keys = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    dot = MultiplicativeAttention(2, 2, method="dot")
    _, w = dot(q, keys)
    e = torch.tensor([2.0, -1.0])
    assert torch.allclose(w[0], torch.softmax(e, 0), atol=1e-6)
    gen = MultiplicativeAttention(2, 2, method="general", scaled=True)
    with torch.no_grad():
        gen.weight.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # W_a swaps the key's entries
    _, w = gen(q, keys)
    e = torch.tensor([-2.0, 1.0]) / math.sqrt(2)  # q . (W_a k)
    assert torch.allclose(w[0], torch.softmax(e, 0), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid: dot, general"):
        MultiplicativeAttention(4, 4, method="concat")
    with pytest.raises(ValueError, match="query_size == key_size"):
        MultiplicativeAttention(4, 6, method="dot")
    att = AdditiveAttention(4, 6, 5)
    q, k, mask = _inputs()
    with pytest.raises(ValueError, match="bool"):
        att(q, k, mask=mask.long())
    with pytest.raises(ValueError, match="keys_proj"):
        att(q, k, keys_proj=torch.zeros(3, 5, 4))
    with pytest.raises(ValueError, match="query"):
        att(torch.zeros(3, 5), k)


@pytest.mark.parametrize("make", [
    lambda: AdditiveAttention(4, 6, 5).double(),
    lambda: MultiplicativeAttention(4, 6).double(),
])
def test_gradcheck(make):
    torch.manual_seed(3)
    att = make()
    q, k, mask = _inputs(B=2, S=4, N=2, dtype=torch.float64)
    q.requires_grad_(True)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: att(a, b, mask=mask), (q, k))
