"""Captioning task: attention localisation by hand, the overlay picture, and
fast_dev_run of both shapes experiments through the real Hydra tree."""

from __future__ import annotations

import json

import pytest
import torch

from recur_attn.tasks.captioning import attention_figure, attention_localisation

ITOS = ["<pad>", "<start>", "<end>", "<unk>", "a", "red", "blue", "circle", "square", "above"]


def test_attention_localisation_by_hand():
    # 2x2 grid on a 20 px image: cell centres (5, 5), (15, 5), (5, 15), (15, 15)
    tokens = torch.tensor([[4, 5, 7, 9, 4, 6, 8, 2]])  # a red circle above a blue square <end>
    # objects: red circle (colour 0, shape 0) top-left box, blue square (2, 1) bottom-right box
    objects = torch.tensor([[[0, 0], [2, 1], [-1, -1]]])
    boxes = torch.tensor([[[0, 0, 10, 10], [10, 10, 20, 20], [-1, -1, -1, -1]]])
    peaks = [0, 0, 3, 0, 0, 3, 0, 0]  # red->cell 0 (in), circle->cell 3 (out), blue->0 (out), square->3 (in)
    alphas = torch.nn.functional.one_hot(torch.tensor([peaks]), 4).float() * 0.7 + 0.075
    hits, words, chance = attention_localisation(tokens, alphas, boxes, objects, ITOS, grid=2, image_size=20)
    assert (hits, words) == (2, 4)
    assert chance == pytest.approx(4 * 0.25)
    # a phrase naming no object of the image is not scored
    tokens2 = torch.tensor([[4, 6, 7, 2]])  # a blue circle
    assert attention_localisation(tokens2, alphas[:, :4], boxes, objects, ITOS, 2, 20)[1] == 0


def test_attention_figure_draws_one_panel_a_word(tmp_path):
    fig = attention_figure(torch.rand(3, 16, 16), ["a", "red", "circle"], torch.softmax(torch.randn(3, 16), -1), 4)
    assert sum(ax.has_data() for ax in fig.axes) == 4  # the image + 3 words
    path = tmp_path / "att.png"
    fig.savefig(path)
    assert path.stat().st_size > 1000


SHAPES_FAST = [
    "data.n_train=32", "data.n_val=8", "data.n_test=8", "data.batch_size=8", "data.eval_batch_size=8",
    "data.image_size=32", "model.net.hidden_size=16", "model.net.embed_size=8", "model.net.attention_size=8",
    "model.net.encoder.channels=[4,8]", "model.net.encoder.grid=4", "model.num_overlays=2", "model.beam_size=2",
    "model.max_decode_len=6", "++trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "extras.print_config=false",
    "logger=tensorboard",
]


@pytest.mark.parametrize("experiment", ["sat_shapes", "sat_shapes_meanpool"])
def test_fast_dev_run_of_the_shapes_experiments(experiment, hydra_compose, tmp_path):
    from conftest import set_paths

    from recur_attn.cli.train import train

    cfg = set_paths(hydra_compose("train", [f"experiment={experiment}", "debug=fdr", *SHAPES_FAST]), tmp_path)
    assert cfg.model.net.attention == ("soft" if experiment == "sat_shapes" else "mean")
    metrics, objects = train(cfg)
    assert {"val/bleu4", "test/bleu4", "test/bleu1", "test/loss"} <= set(metrics)
    pngs = sorted((tmp_path / "attention").glob("*.png"))
    assert len(pngs) == 2  # the overlays of the fixed validation images
    task = objects["model"]
    assert task.itos == objects["datamodule"].vocab.itos
    # the loss and its parts are training-epoch metrics whose states a mid-epoch checkpoint keeps (BaseTask)
    assert {"train_loss", "train_parts.nll", "train_parts.doubly_stochastic"} <= set(task.train_metrics())
    assert "train/nll" in metrics or "train/nll_epoch" in metrics
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "test/bleu4" in saved
