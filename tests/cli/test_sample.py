"""recur-attn-sample from a checkpoint written by a Lightning fit of CharLMTask."""

from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from recur_attn.cli.sample import load_charlm, main, sample_text
from recur_attn.data.text import CharTextDataModule
from recur_attn.models.charlm import CharLM
from recur_attn.tasks.charlm import CharLMTask


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("charlm")
    text = tmp / "play.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 40)
    torch.manual_seed(0)
    dm = CharTextDataModule(files=str(text), batch_size=4, seq_len=20)
    net = CharLM(vocab_size=dm.dims["vocab_size"], cell="gru", embedding_size=8, hidden_size=16, num_layers=1)
    task = CharLMTask(net, optimizer=partial(torch.optim.Adam, lr=1e-2))
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp,
                         callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True)])
    trainer.fit(task, dm)
    assert trainer.callback_metrics["val/bpc"] < 3.0  # well below log2(vocab) ~ 4.6: it learned something
    return tmp / "ckpt" / "last.ckpt"


def test_sample_from_checkpoint(ckpt, capsys):
    net, vocab = load_charlm(ckpt)
    assert "R" in vocab and net.vocab_size == len(vocab)
    a = sample_text(net, vocab, "ROMEO:", 200, 0.8, seed=3)
    assert len(a) == 200 and set(a) <= set(vocab)
    assert a == sample_text(net, vocab, "ROMEO:", 200, 0.8, seed=3)
    main(["--ckpt", str(ckpt), "--prime", "ROMEO:", "--temperature", "0.5", "--length", "50", "--seed", "1"])
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) >= 50
    with pytest.raises(ValueError, match="never saw"):
        sample_text(net, vocab, "ROMEO: ~~", 5, 1.0)


def test_not_a_charlm_checkpoint(tmp_path):
    p = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, p)
    with pytest.raises(ValueError, match="not a character-LM checkpoint"):
        load_charlm(p)
