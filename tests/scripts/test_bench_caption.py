"""scripts/bench_caption.py: the fast decoder and the tutorial reference agree
(loss and gradients on the same weights), and the table lands in its section."""

from __future__ import annotations

import pytest
import torch

from conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_caption")


@pytest.mark.parametrize("varied", [False, True])
def test_fast_decoder_loss_and_gradients_equal_the_reference(bench, varied):
    torch.set_num_threads(1)
    model, ref, feats, caps, lens = bench.build_pair(batch=5, locations=6, features=12, attention=7, embed=5,
                                                     hidden=9, vocab=30, tokens=8, lam=0.6, seed=3, varied=varied)
    if varied:
        assert len(set(lens.tolist())) > 1  # the reference really sorts and shrinks
    lf = bench.fast_loss(model, feats, caps, lens)
    lr = bench.reference_loss(ref, feats, caps, lens, 0.6)
    torch.testing.assert_close(lf, lr, rtol=1e-5, atol=1e-6)
    lf.backward()
    lr.backward()
    pairs = [(model.L_o.weight, ref.L_o.weight), (model.attention.key_proj.weight, ref.attention.encoder_att.weight),
             (model.attention.query_proj.weight, ref.attention.decoder_att.weight),
             (model.attention.v.weight, ref.attention.full_att.weight),
             (model.cell.weight_ih, ref.decode_step.weight_ih), (model.cell.weight_hh, ref.decode_step.weight_hh),
             (model.init_state[1].weight, ref.init_c.weight), (model.f_beta.weight, ref.f_beta.weight),
             (model.embedding.weight, ref.embedding.weight)]
    for a, b in pairs:
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


def test_main_writes_the_caption_decoder_section(bench, tmp_path, capsys):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n## Cells\n\nother numbers\n\n## Caption decoder\n\nold\n\n## Later\n\nkept\n")
    res = bench.main(["--batch", "3", "--locations", "4", "--features", "8", "--attention", "4", "--embed", "4",
                      "--hidden", "6", "--vocab", "20", "--tokens", "5", "--repeats", "1", "--out", str(out)])
    assert abs(res["loss_fast"] - res["loss_ref"]) < 1e-5
    text = out.read_text()
    assert text.count("## Caption decoder") == 1 and "old" not in text
    assert "other numbers" in text and "## Later\n\nkept" in text
    assert "| reference" in text and "speed-up" in capsys.readouterr().out
