"""Figure helpers: character features, unit search, HTML colouring, plots written."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recur_attn.analysis import figures as F

torch.set_num_threads(1)


def test_char_features():
    f = F.char_features('a "b(c)" d\nxy[')
    np.testing.assert_array_equal(f["inside_quotes"], [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(f["line_position"], list(range(11)) + [0, 1, 2])
    np.testing.assert_array_equal(f["bracket_depth"], [0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1])


def test_find_char_units_picks_the_tracking_unit_and_skips_constant_features():
    text = "ab (cd (ef) gh) ij\nkl (m)\n" * 4
    feats = F.char_features(text)
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(len(text), 6)) * 0.3
    acts[:, 4] = np.tanh(feats["bracket_depth"] - 0.5) + rng.normal(size=len(text)) * 0.05
    acts[:, 1] = -feats["line_position"] / 20
    found = F.find_char_units(torch.tensor(acts), feats)
    assert "inside_quotes" not in found  # no quote mark in the text
    assert found["bracket_depth"][0] == 4 and found["bracket_depth"][1] > 0.9
    assert found["line_position"][0] == 1 and found["line_position"][1] < -0.99
    with pytest.raises(ValueError, match="characters"):
        F.find_char_units(torch.zeros(3, 2), {"x": np.arange(4.0)})


def test_char_html_colours_every_character():
    page = F.char_html("a<b\n", [("unit 3", np.array([1.0, -1.0, 0.0, 0.5]))], title="t")
    assert page.count("<span") == 4
    assert "rgb(255,0,0)" in page and "rgb(0,0,255)" in page and "&lt;" in page
    with pytest.raises(ValueError, match="activations"):
        F.char_html("ab", [("u", np.zeros(3))])


def test_plots_write_pngs(tmp_path):
    g = torch.Generator().manual_seed(0)
    rec = {"layer": 0, "direction": 0, "i": torch.rand(2, 9, 4, generator=g), "c": torch.randn(2, 9, 4, generator=g)}
    p = F.plot_gate_heatmaps(rec, 1, tmp_path / "h.png", inputs=torch.rand(9, 2, generator=g), markers=[2, 6],
                             unit_order=[3, 0])
    q = F.plot_unit_trajectories(rec["c"], [1, 2], tmp_path / "u.png", examples=[0, 1], markers=[[2], [3, 5]])
    r = F.plot_gradient_flow([("a", torch.rand(9) + 0.1, None), ("b", torch.rand(9), torch.rand(9))],
                             tmp_path / "g.png")
    for path in (p, q, r):
        assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="outside the batch"):
        F.plot_gate_heatmaps(rec, 5, tmp_path / "x.png")
