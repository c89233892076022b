"""Show-Attend-Tell model: shapes, attention normalisation, the regulariser,
masking, hard attention's gradients, decoding (beam 1 == greedy), encoders."""

from __future__ import annotations

import pytest
import torch

from recur_attn.models.captioner import (
    END,
    PAD,
    START,
    ShowAttendTell,
    build_encoder,
    doubly_stochastic_penalty,
)

torch.set_num_threads(1)

V = 17
CAPS = torch.tensor([[START, 5, 6, 7, 8, END], [START, 9, END, PAD, PAD, PAD], [START, 4, 4, 5, END, PAD]])
LENS = torch.tensor([6, 3, 5])


def make(attention="soft", cell="lstm", dropout=0.0, lam=0.7, **kw):
    torch.manual_seed(0)
    return ShowAttendTell(V, encoder=dict(name="small", grid=3, channels=[4, 6]), cell=cell, embed_size=5,
                          hidden_size=7, attention_size=6, attention=attention, dropout=dropout,
                          doubly_stochastic=lam, **kw)


def images(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 12, 12, generator=g)


@pytest.mark.parametrize("attention,cell", [("soft", "lstm"), ("soft", "gru"), ("soft", "fgr"),
                                            ("hard", "lstm"), ("mean", "lstm")])
def test_forward_shapes_and_weights_sum_to_one(attention, cell):
    m = make(attention, cell)
    out = m(images(), CAPS, LENS)
    B, T, L = 3, CAPS.shape[1] - 1, m.num_locations
    assert L == 9
    assert out["logits"].shape == (B, T, V)
    assert out["alphas"].shape == (B, T, L)
    assert out["mask"].tolist()[1] == [True, True, False, False, False]
    torch.testing.assert_close(out["alphas"].sum(-1), torch.ones(B, T))
    assert (out["alphas"] >= 0).all()
    res = m.loss(out)
    res["loss"].backward()
    assert torch.isfinite(res["loss"])
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:3])
    if attention == "hard":
        assert out["logp_s"].shape == (B, T) and out["entropy"].shape == (B, T)
        assert {"reinforce", "entropy"} <= set(res)


def test_doubly_stochastic_penalty_is_the_hand_computation():
    m = make(lam=0.7)
    out = m(images(), CAPS, LENS)
    a, mask = out["alphas"].detach(), out["mask"]
    by_hand = []
    for b in range(3):
        s = 0.0
        for i in range(m.num_locations):
            tot = sum(float(a[b, t, i]) for t in range(a.shape[1]) if bool(mask[b, t]))
            s += (1.0 - tot) ** 2
        by_hand.append(s)
    torch.testing.assert_close(doubly_stochastic_penalty(a, mask), torch.tensor(by_hand), rtol=1e-5, atol=1e-5)
    res = m.loss(out)
    nll = torch.nn.functional.cross_entropy(out["logits"][mask], out["targets"][mask])
    torch.testing.assert_close(res["nll"], nll)
    torch.testing.assert_close(res["loss"], nll + 0.7 * torch.tensor(by_hand).mean(), rtol=1e-5, atol=1e-5)


def test_padding_is_masked_other_captions_do_not_change_a_caption():
    m = make().eval()
    img = images()
    out = m(img, CAPS, LENS)
    # caption 1 alone, without the padding the longer captions impose
    alone = m(img[1:2], CAPS[1:2, :3], LENS[1:2])
    torch.testing.assert_close(out["logits"][1, :2], alone["logits"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["alphas"][1, :2], alone["alphas"][0], rtol=1e-5, atol=1e-5)
    # the loss ignores whatever sits in the padding
    caps2 = CAPS.clone()
    caps2[1, 3:] = 11
    torch.testing.assert_close(m.loss(m(img, caps2, LENS))["loss"], m.loss(out)["loss"])


def test_loss_gradcheck_float64():
    m = make(lam=0.3).double().eval()
    feats = torch.randn(1, m.num_locations, m.feature_size, dtype=torch.double, requires_grad=True)

    def f(a):
        return m.loss(m(None, CAPS[2:], LENS[2:], features=a))["loss"]

    assert torch.autograd.gradcheck(f, (feats,), eps=1e-6, atol=1e-5)


def test_hard_attention_reinforce_reaches_the_attention_and_baseline_moves():
    m = make("hard", lam=0.0, entropy_weight=0.0).train()
    torch.manual_seed(3)
    out = m(images(), CAPS, LENS)
    res = m.loss(out)
    first = float(m.baseline)
    ce = torch.nn.functional.cross_entropy(out["logits"].transpose(1, 2), out["targets"], reduction="none")
    log_lik = -(ce * out["mask"]).sum(1)  # log p(y | s, a) per caption
    assert first == pytest.approx(float(log_lik.mean()), rel=1e-5)  # the baseline starts at the first mean
    res["loss"].backward()
    # the sampled location has no pathwise gradient: the attention learns from REINFORCE only
    assert m.attention.query_proj.weight.grad.abs().sum() > 0
    out2 = m(images(), CAPS, LENS)
    m.loss(out2)
    assert float(m.baseline) != first
    # without REINFORCE (and entropy / regulariser) the attention gets no gradient at all
    m2 = make("hard", lam=0.0, entropy_weight=0.0, reinforce_weight=0.0).train()
    m2.loss(m2(images(), CAPS, LENS))["loss"].backward()
    g = m2.attention.query_proj.weight.grad
    assert g is None or g.abs().sum() == 0


@pytest.mark.parametrize("attention", ["soft", "hard", "mean"])
def test_beam_one_equals_greedy_and_alphas_are_the_decoding_steps(attention):
    m = make(attention).eval()
    img = images(4, seed=5)
    g = m.greedy(img, max_len=7)
    b = m.beam_search(img, beam_size=1, max_len=7)
    assert torch.equal(g["tokens"], b["tokens"])
    assert torch.equal(g["lengths"], b["lengths"])
    torch.testing.assert_close(g["alphas"], b["alphas"])
    # the attention of every emitted word, step by step
    dec = m.start_decoding(img)
    tok = torch.full((4,), START)
    for t in range(g["tokens"].shape[1]):
        logp, dec, alpha = m.decode_step(tok, dec)
        live = t < g["lengths"]
        torch.testing.assert_close(alpha[live], g["alphas"][live, t], rtol=1e-5, atol=1e-6)
        assert torch.equal(logp.argmax(-1)[live], g["tokens"][live, t])
        tok = g["tokens"][:, t].clamp_min(END)
    assert ((g["tokens"] != START) & (g["tokens"] != PAD) | (g["tokens"] == PAD)).all()


def test_beam_search_batched_shapes_and_better_or_equal_score():
    m = make().eval()
    img = images(3, seed=7)
    b3 = m.beam_search(img, beam_size=4, max_len=6, length_penalty=0.0)
    g = m.greedy(img, max_len=6)
    assert b3["tokens"].shape[0] == 3 and b3["alphas"].shape[:2] == b3["tokens"].shape
    # with no length normalisation the beam's best log-prob is at least greedy's
    dec = m.start_decoding(img)
    tok, lp = torch.full((3,), START), torch.zeros(3)
    done = torch.zeros(3, dtype=torch.bool)
    for t in range(g["tokens"].shape[1]):
        logp, dec, _ = m.decode_step(tok, dec)
        nxt = g["tokens"][:, t]
        lp += torch.where(done, torch.zeros(3), logp.gather(1, nxt.clamp_min(END)[:, None]).squeeze(1))
        done |= nxt == END
        tok = nxt.clamp_min(END)
    assert (b3["logprob"] >= lp - 1e-5).all()
    # each image decoded alone gives the same as in the batch
    one = m.beam_search(img[1:2], beam_size=4, max_len=6, length_penalty=0.0)
    L1 = int(one["lengths"][0])
    assert torch.equal(one["tokens"][0, :L1], b3["tokens"][1, :L1])


def test_torchvision_encoder_grid_weights_and_fine_tune(tmp_path):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    enc = build_encoder("resnet18", grid=2, weights_path=str(path), fine_tune=True, fine_tune_blocks=1)
    torch.testing.assert_close(enc.backbone.blocks[0][0].weight, ref.conv1.weight)
    assert all(p.requires_grad for p in enc.backbone.blocks[-1].parameters())
    assert not any(p.requires_grad for p in enc.backbone.blocks[-2].parameters())
    enc.train()
    assert not enc.backbone.blocks[0].training and enc.backbone.blocks[-1].training
    out = enc(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 4, 512)
    with pytest.raises(ValueError, match="valid choices"):
        build_encoder("resnet7")
    with pytest.raises(ValueError, match="does not exist"):
        build_encoder("resnet18", weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="always trained"):
        build_encoder("small", fine_tune=True)


def test_small_encoder_coords_and_bad_arguments():
    enc = build_encoder("small", grid=4, channels=[4], coords=True)
    a = enc(torch.randn(2, 3, 16, 16))
    assert a.shape == (2, 16, 6)
    torch.testing.assert_close(a[0, :, -2:], a[1, :, -2:])  # (x, y) of the cells
    assert float(a[0, 1, -2]) > float(a[0, 0, -2]) and float(a[0, 4, -1]) > float(a[0, 0, -1])
    with pytest.raises(ValueError, match="valid choices"):
        make("sharp")


@pytest.mark.slow
def test_vgg16_encoder_cut_before_last_pool():
    enc = build_encoder("vgg16", grid=14)
    out = enc.backbone(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 512, 14, 14)  # conv5_3
    assert enc(torch.randn(1, 3, 224, 224)).shape == (1, 196, 512)
