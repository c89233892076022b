"""recur-attn-caption: a checkpoint written by the captioning task captions image files."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from functools import partial

from recur_attn.cli.caption import load_captioner, main
from recur_attn.data.captions import ShapesCaptionDataModule, generate_shapes
from recur_attn.models.captioner import ShowAttendTell
from recur_attn.tasks.captioning import CaptioningTask


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cap")
    dm = ShapesCaptionDataModule(n_train=16, n_val=4, n_test=4, image_size=32, batch_size=8, eval_batch_size=4)
    dm.setup()
    net = ShowAttendTell(dm.dims["vocab_size"], encoder=dict(name="small", grid=4, channels=[4, 8]),
                         embed_size=8, hidden_size=12, attention_size=8, dropout=0.0)
    task = CaptioningTask(net, partial(torch.optim.Adam, lr=1e-3), num_overlays=0, max_decode_len=5)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out))
    trainer.fit(task, datamodule=dm)
    path = out / "model.ckpt"
    trainer.save_checkpoint(path)
    return path, task


def test_checkpoint_round_trip(ckpt):
    path, task = ckpt
    net, info = load_captioner(path)
    assert info["itos"] == task.itos and info["image_size"] == 32
    for (k, a), (k2, b) in zip(net.state_dict().items(), task.net.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_caption_command_prints_captions_and_writes_overlays(ckpt, tmp_path, capsys):
    from PIL import Image

    path, _ = ckpt
    imgs = generate_shapes(2, seed=9, split="demo", image_size=32)["images"]
    files = []
    for i in range(2):
        f = tmp_path / f"scene{i}.png"
        Image.fromarray(imgs[i].permute(1, 2, 0).numpy()).save(f)
        files.append(str(f))
    assert main(["--ckpt", str(path), *files, "--beam-size", "2", "--max-len", "4",
                 "--attention-png", str(tmp_path / "att")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == files
    assert sorted(p.name for p in (tmp_path / "att").glob("*.png")) == ["scene0_attention.png",
                                                                       "scene1_attention.png"]


def test_caption_command_errors(tmp_path):
    with pytest.raises(SystemExit):
        main(["--ckpt", "x.ckpt", str(tmp_path / "nope.png")])
    img = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(img)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        main(["--ckpt", str(tmp_path / "missing.ckpt"), str(img)])
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a captioning checkpoint"):
        main(["--ckpt", str(tmp_path / "other.ckpt"), str(img)])
