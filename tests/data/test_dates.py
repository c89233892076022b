"""DatesDataModule: deterministic, held-out days, well-formed pairs."""

import datetime as dt

import pytest
import torch

from recur_attn.data import DatesDataModule
from recur_attn.data.vocab import BOS, EOS, PAD


def _dm(seed=0, **kw):
    return DatesDataModule(n_train=400, n_val=50, n_test=50, seed=seed, batch_size=32, **kw)


def test_same_seed_same_data_and_batches():
    a, b = _dm(3), _dm(3)
    assert a.pairs == b.pairs and a.dims == b.dims
    for x, y in zip(a.train_dataloader(), b.train_dataloader()):
        for k in x:
            assert torch.equal(x[k], y[k])
    c = _dm(4)
    assert c.pairs["train"] != a.pairs["train"]


def test_pairs_are_iso_dates_of_held_out_days():
    dm = _dm(1)
    days = {split: {t for _, t in dm.pairs[split]} for split in ("train", "val", "test")}
    assert not days["train"] & days["val"] and not days["train"] & days["test"]
    assert not days["val"] & days["test"]
    formats = set()
    for split in ("train", "val", "test"):
        for src, tgt in dm.pairs[split]:
            d = dt.date.fromisoformat(tgt)
            assert dt.date(1950, 1, 1) <= d <= dt.date(2049, 12, 31)
            assert f"{d.year % 100:02d}" in src  # every format shows the year
            formats.add(src.replace(str(d.year), "Y"))
    assert len(formats) > 100  # many surface forms


def test_batches_and_dims():
    dm = _dm()
    assert dm.dims == {"src_vocab_size": dm.src_tokenizer.size, "tgt_vocab_size": 15, "pad_id": PAD,
                       "bos_id": BOS, "eos_id": EOS}
    b = next(iter(dm.val_dataloader()))
    assert torch.all(b["tgt_lengths"] == 11)  # YYYY-MM-DD + eos
    assert torch.all(b["tgt_in"][:, 0] == BOS) and torch.all(b["tgt_out"][:, -1] == EOS)
    assert torch.equal(b["tgt_in"][:, 1:], b["tgt_out"][:, :-1])
    i = 0
    n = int(b["src_lengths"][i])
    assert b["src"][i, n - 1] == EOS and torch.all(b["src"][i, n:] == PAD)
    src, tgt = dm.pairs["val"][int(b["index"][i])]
    assert dm.src_tokenizer.decode(b["src"][i].tolist()) == src
    assert dm.tgt_tokenizer.decode(b["tgt_out"][i].tolist()) == tgt


def test_bad_arguments():
    with pytest.raises(ValueError, match="locale"):
        _dm(locales=["xx_NOPE"])
    with pytest.raises(ValueError, match="ISO"):
        _dm(start="May 1950")
    with pytest.raises(ValueError, match="n_train"):
        DatesDataModule(n_train=0)
