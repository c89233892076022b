"""Caption data: shapes scenes (deterministic, boxes match pixels, grammar),
vocabulary, the Karpathy JSON reader on a fixture with a corrupt image."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from recur_attn.data.captions import (
    COLOURS,
    END,
    SHAPES,
    START,
    UNK,
    KarpathyCaptionDataModule,
    ShapesCaptionDataModule,
    Vocabulary,
    generate_shapes,
    read_karpathy_json,
    tokenize,
)


def test_shapes_are_deterministic_and_splits_differ():
    a = generate_shapes(20, seed=3, split="train", image_size=48)
    b = generate_shapes(20, seed=3, split="train", image_size=48)
    c = generate_shapes(20, seed=3, split="val", image_size=48)
    d = generate_shapes(20, seed=4, split="train", image_size=48)
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["boxes"], b["boxes"])
    assert a["captions"] == b["captions"]
    assert not torch.equal(a["images"], c["images"]) and not torch.equal(a["images"], d["images"])
    assert a["images"].shape == (20, 3, 48, 48) and a["images"].dtype == torch.uint8


def test_shapes_boxes_match_the_drawn_pixels():
    g = generate_shapes(40, seed=0, split="train", image_size=64)
    colours = list(COLOURS.values())
    for img, boxes, objs in zip(g["images"], g["boxes"], g["objects"]):
        img = img.permute(1, 2, 0).numpy()
        drawn = img.any(-1)
        covered = np.zeros_like(drawn)
        for box, (ci, si) in zip(boxes.tolist(), objs.tolist()):
            if ci < 0:
                assert box == [-1, -1, -1, -1]
                continue
            x0, y0, x1, y1 = box
            inside = np.all(img[y0:y1, x0:x1] == colours[ci], axis=-1)
            assert inside.any()
            # tight: every edge row / column of the box holds a pixel of the object's colour
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y0:y1, x0:x1] = True
        assert not (drawn & ~covered).any()  # no drawn pixel outside every box


def test_shapes_captions_follow_the_grammar_and_positions():
    g = generate_shapes(60, seed=1, split="test", image_size=64, min_objects=2, max_objects=2)
    names = list(COLOURS)
    for caps, boxes, objs in zip(g["captions"], g["boxes"], g["objects"]):
        assert len(caps) == 2  # both orderings
        words = caps[0]
        centres = {(names[c], SHAPES[s]): ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
                   for b, (c, s) in zip(boxes.tolist(), objs.tolist()) if c >= 0}
        first, second = (words[1], words[2]), (words[-2], words[-1])
        assert words[0] == "a" and words[-3] == "a"
        (x1, y1), (x2, y2) = centres[first], centres[second]
        assert x1 <= x2 + 1  # left-to-right caption first
        rel = " ".join(words[3:-3])
        if abs(y2 - y1) > abs(x2 - x1) + 2:
            assert rel == ("above" if y1 < y2 else "below")
        elif abs(x2 - x1) > abs(y2 - y1) + 2:
            assert rel == ("left of" if x1 < x2 else "right of")


def test_vocabulary_min_count_and_round_trip():
    caps = [["a", "dog", "runs"], ["a", "dog"], ["a", "cat"]]
    v = Vocabulary.build(caps, min_count=2)
    assert v.itos[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert v.itos[4:] == ["a", "dog"]
    ids = v.encode(["a", "cat", "dog"])
    assert ids[0] == START and ids[-1] == END and ids[2] == UNK
    assert v.decode(ids + [0, 0]) == ["a", "<unk>", "dog"]
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(caps, min_count=0)
    assert tokenize("A man's Dog, running!") == ["a", "man's", "dog", "running"]


def test_shapes_datamodule_batches():
    dm = ShapesCaptionDataModule(n_train=40, n_val=10, n_test=10, image_size=32, batch_size=8, eval_batch_size=5)
    assert dm.dims is None
    dm.setup()
    assert dm.dims["vocab_size"] == len(dm.vocab) and dm.dims["image_size"] == 32
    b = next(iter(dm.train_dataloader()))
    assert b["images"].shape == (8, 3, 32, 32) and b["images"].dtype == torch.float32
    assert b["captions"][:, 0].eq(START).all()
    assert (b["captions"].gather(1, b["lengths"][:, None] - 1) == END).all()
    assert b["boxes"].shape == (8, 3, 4) and b["objects"].shape == (8, 3, 2)
    v = next(iter(dm.val_dataloader()))
    assert v["index"].tolist() == [0, 1, 2, 3, 4]
    assert len(dm.references("val")[0]) >= 1


def _write_png(path, colour, mode="RGB"):
    from PIL import Image

    Image.new(mode, (20, 16), colour).save(path)


@pytest.fixture
def karpathy_dir(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    entries = []
    splits = ["train", "train", "restval", "val", "test", "train"]
    for k, split in enumerate(splits):
        name = f"im{k}.png"
        if k == 5:
            (imgs / name).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")  # corrupt
        elif k == 1:
            _write_png(imgs / name, (255, 0, 0, 0), mode="RGBA")  # transparent: flattened on white
        else:
            _write_png(imgs / name, (10 * k, 100, 200))
        entries.append({"filename": name, "split": split, "imgid": k,
                        "sentences": [{"tokens": ["a", "picture", f"w{k}"], "raw": f"A picture w{k}."},
                                      {"raw": "A Picture of Things."}]})
    (tmp_path / "dataset_test.json").write_text(json.dumps({"images": entries, "dataset": "test"}))
    return tmp_path


def test_karpathy_reader_skips_and_reports_a_corrupt_image(karpathy_dir, caplog):
    dm = KarpathyCaptionDataModule(str(karpathy_dir), json_name="dataset_test.json", image_dir="imgs",
                                   image_size=16, batch_size=4, min_count=1)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert dm.skipped == [str(karpathy_dir / "imgs" / "im5.png")]
    text = caplog.text
    assert "im5.png" in text and "skipped 1 of 6 images" in text
    assert len(dm.references("train")) == 3  # two train + restval, the corrupt one skipped
    assert dm.references("train")[0][1] == ["a", "picture", "of", "things"]
    assert "w5" not in dm.vocab.stoi and "w2" in dm.vocab.stoi
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 16, 16)  # 3 images x 2 captions = 6 pairs
    assert len(dm.dataset("train")) == 6
    # the transparent image became white (before normalisation)
    from recur_attn.data.captions import load_image

    assert load_image(karpathy_dir / "imgs" / "im1.png", 8).eq(255).all()


def test_karpathy_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        read_karpathy_json(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"filename": "a.jpg",\n  oops}\n]}')
    with pytest.raises(ValueError, match=r"bad.json:3"):
        read_karpathy_json(bad)
    nosplit = tmp_path / "nosplit.json"
    nosplit.write_text(json.dumps({"images": [{"filename": "a.jpg", "sentences": [{"raw": "x"}]}]}))
    with pytest.raises(ValueError, match=r"images\[0\] lacks \['split'\]"):
        read_karpathy_json(nosplit)
