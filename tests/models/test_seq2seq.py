"""Seq2Seq and the batched beam search."""

import itertools
import math

import pytest
import torch

from recur_attn.models import Seq2Seq
from recur_attn.models.beam import beam_search, greedy_search

PAD, BOS, EOS = 0, 1, 2


# ---------------------------------------------------------------- beam search on hand-set models
def markov_step(table):
    """A 'model' whose log p(next | prefix) depends on (t, previous token) only:
    table (T, V, V) of log-probabilities. State: (t (N,), prev (N,))."""

    def step(tokens, state):
        t, _ = state
        logp = table[t.clamp(max=table.shape[0] - 1), tokens]  # (N, V)
        return logp, (t + 1, tokens)

    return step


def _log(p):
    return math.log(p) if p > 0 else float("-inf")


def test_beam_beats_greedy_on_hand_set_model():
    # tokens: 0 pad, 1 bos, 2 eos, 3 a, 4 b
    V = 5
    table = torch.full((3, V, V), float("-inf"))
    first = {EOS: 0.1, 3: 0.5, 4: 0.4}  # after bos: a is likeliest
    after_a = {EOS: 0.35, 3: 0.33, 4: 0.32}  # a is a dead end: p(a eos) = 0.175
    after_b = {EOS: 0.9, 3: 0.05, 4: 0.05}  # p(b eos) = 0.36: the best sequence
    for t in range(3):
        for prev, dist in ((BOS, first), (3, after_a), (4, after_b)):
            for tok, p in dist.items():
                table[t, prev, tok] = _log(p)
    state = (torch.zeros(1, dtype=torch.long), torch.full((1,), BOS))
    g, _ = greedy_search(markov_step(table), state, 1, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=3)
    assert g[0].tolist()[:2] == [3, EOS]
    res = beam_search(markov_step(table), state, 1, 2, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=3)
    assert res.tokens[0, 0].tolist()[:2] == [4, EOS]
    assert res.lengths[0, 0] == 2 and bool(res.finished[0, 0])
    assert math.isclose(res.log_probs[0, 0].item(), math.log(0.4 * 0.9), rel_tol=1e-5)
    assert res.tokens[0, 1].tolist() == [3, EOS]  # the runner-up; both ended: the search stopped
    assert math.isclose(res.log_probs[0, 1].item(), math.log(0.5 * 0.35), rel_tol=1e-5)


def _brute_force_best(table, max_len, alpha=0.0):
    V = table.shape[1]
    best, best_seq = float("-inf"), None
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(2, V), repeat=n):  # real tokens and eos
            if EOS in seq[:-1] or (n < max_len and seq[-1] != EOS):
                continue
            lp, prev = 0.0, BOS
            for t, tok in enumerate(seq):
                lp += table[t, prev, tok].item()
                prev = tok
            score = lp / (((5 + n) / 6) ** alpha)
            if score > best:
                best, best_seq = score, list(seq)
    return best, best_seq


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_finds_the_brute_force_optimum_for_every_sentence(alpha):
    g = torch.Generator().manual_seed(0)
    B, V, L = 3, 6, 3
    tables = []
    for b in range(B):
        logits = torch.randn(L, V, V, generator=g) * 2
        logits[..., PAD] = float("-inf")
        logits[..., BOS] = float("-inf")
        tables.append(torch.log_softmax(logits, -1))
    table = torch.stack(tables)  # (B, L, V, V): each sentence its own model

    def step(tokens, state):
        t, sent = state
        logp = table[sent, t.clamp(max=L - 1), tokens]
        return logp, (t + 1, sent)

    state = (torch.zeros(B, dtype=torch.long), torch.arange(B))
    res = beam_search(step, state, B, 40, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=L, alpha=alpha)
    for b in range(B):
        best, seq = _brute_force_best(table[b], L, alpha)
        got = [t for t in res.tokens[b, 0].tolist() if t != PAD]
        assert got == seq
        assert math.isclose(res.scores[b, 0].item(), best, rel_tol=1e-5)
        assert torch.all(res.scores[b, :-1] >= res.scores[b, 1:])  # best first


def test_beam_returns_a_result_when_no_beam_ends():
    V = 5
    table = torch.full((4, V, V), float("-inf"))
    table[:, :, 3] = math.log(0.6)
    table[:, :, 4] = math.log(0.4)  # eos impossible
    state = (torch.zeros(2, dtype=torch.long), torch.full((2,), BOS))
    res = beam_search(markov_step(table), state, 2, 3, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=4)
    assert res.tokens.shape == (2, 3, 4)
    assert not res.finished.any()
    assert res.tokens[0, 0].tolist() == [3, 3, 3, 3]
    assert torch.equal(res.lengths, torch.full((2, 3), 4))


# ---------------------------------------------------------------- the model
def _model(attention, cell="lstm", seed=0, **kw):
    torch.manual_seed(seed)
    m = Seq2Seq(src_vocab_size=12, tgt_vocab_size=10, cell=cell, attention=attention, embedding_size=8,
                hidden_size=16, encoder_hidden_size=8, **kw)
    return m.eval()


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 12, (4, 7), generator=g)
    lengths = torch.tensor([7, 3, 5, 1])
    src[torch.arange(7)[None, :] >= lengths[:, None]] = PAD
    return src, lengths


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_beam_of_one_equals_greedy(attention):
    m = _model(attention)
    src, lengths = _batch()
    g, glen = m.greedy(src, lengths, max_len=9)
    r = m.beam_search(src, lengths, beam_size=1, max_len=9)
    assert torch.equal(g, r.best())
    assert torch.equal(glen, r.lengths[:, 0])


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_batched_beam_equals_one_sentence_at_a_time(attention):
    m = _model(attention, seed=1)
    src, lengths = _batch(1)
    res = m.beam_search(src, lengths, beam_size=3, max_len=8, alpha=0.6)
    for b in range(src.shape[0]):
        n = int(lengths[b])
        one = m.beam_search(src[b:b + 1, :n], lengths[b:b + 1], beam_size=3, max_len=8, alpha=0.6)
        L = one.tokens.shape[-1]
        assert torch.equal(res.tokens[b, :, :L], one.tokens[0])
        assert torch.allclose(res.scores[b], one.scores[0], atol=1e-5)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_padding_does_not_change_a_sentence(attention):
    m = _model(attention, seed=2)
    src, lengths = _batch(2)
    tgt = torch.randint(3, 10, (4, 5))
    logits, att = m(src, lengths, tgt)
    wide = torch.cat([src, torch.full((4, 4), PAD)], 1)
    logits2, att2 = m(wide, lengths, tgt)
    assert torch.allclose(logits, logits2, atol=1e-5)
    b = 1
    one, _ = m(src[b:b + 1, : int(lengths[b])], lengths[b:b + 1], tgt[b:b + 1])
    assert torch.allclose(logits[b], one[0], atol=1e-5)
    if att is not None:
        assert att.shape == (4, 5, 7)
        mask = torch.arange(7)[None, None, :] >= lengths[:, None, None]
        assert torch.all(att.masked_select(mask.expand_as(att)) == 0)
        assert torch.allclose(att.sum(-1), torch.ones(4, 5), atol=1e-5)


@pytest.mark.parametrize("cell", ["gru", "cifg", "clockwork", "fgr", "mut1"])
def test_any_cell_of_the_zoo_trains(cell):
    m = _model("bahdanau", cell=cell).train()
    src, lengths = _batch()
    tgt = torch.randint(3, 10, (4, 5))
    logits, _ = m(src, lengths, tgt)
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    m.eval()
    assert m.beam_search(src, lengths, beam_size=2, max_len=4).tokens.shape[:2] == (4, 2)


def test_bad_configuration():
    with pytest.raises(ValueError, match="valid: bahdanau, luong, none"):
        Seq2Seq(5, 5, attention="local")
    with pytest.raises(ValueError, match="valid: additive, general, dot"):
        Seq2Seq(5, 5, score="concat")
    with pytest.raises(ValueError, match="dot"):
        Seq2Seq(5, 5, hidden_size=8, encoder_hidden_size=8, score="dot")
    with pytest.raises(ValueError, match="unknown cell"):
        Seq2Seq(5, 5, cell="lsmt")
