"""Seq2SeqTask through the real Hydra tree: fast_dev_run of both experiments, the
checkpoint's contents, recur-attn-translate on it."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import set_paths

FAST = [
    "model.net.embedding_size=8", "model.net.hidden_size=16", "model.net.encoder_hidden_size=8",
    "model.net.attention_size=8", "model.num_attention_plots=2",
    "++trainer.enable_progress_bar=false", "++trainer.enable_model_summary=false",
    "callbacks.rich_progress_bar=null", "callbacks.model_summary=null", "extras.print_config=false",
    "num_threads=1",
]
# one epoch of 2 steps with one validation: unlike fast_dev_run it logs and keeps checkpoints
DATES_FAST = ["data.n_train=32", "data.n_val=16", "data.n_test=16", "data.batch_size=16",
              "data.eval_batch_size=16", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def dates_run(hydra_compose, tmp_path_factory):
    from recur_attn.cli.train import train

    out = tmp_path_factory.mktemp("dates")
    cfg = set_paths(hydra_compose("train", ["experiment=dates_attention", "logger=tensorboard",
                                            *DATES_FAST, *FAST]), out)
    metrics, objects = train(cfg)
    return out, metrics, objects


def test_tiny_run_of_dates_attention(dates_run):
    out, metrics, objects = dates_run
    assert {"train/loss", "val/loss", "val/acc", "test/loss", "test/acc"} <= set(metrics)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    net = objects["model"].net
    assert net.attention_kind == "bahdanau" and net.tgt_vocab_size == objects["datamodule"].dims["tgt_vocab_size"]
    assert metrics["val/acc_best"] >= metrics["val/acc"]
    assert sorted(p.name for p in (out / "attention").glob("*.png")) == ["epoch=000-ex=0.png", "epoch=000-ex=1.png"]
    assert list((out / "tensorboard").rglob("events.out.tfevents*"))
    with open(out / "test_predictions.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 16 and set(rows[0]) == {"index", "src_words", "source", "reference", "hypothesis"}
    src, ref = objects["datamodule"].pairs["test"][int(rows[0]["index"])]
    assert (rows[0]["source"], rows[0]["reference"]) == (src, ref)


def test_checkpoint_has_net_config_and_tokenizers_and_translates(dates_run, tmp_path, capsys):
    from recur_attn.cli.translate import load_translator, main

    out, _, objects = dates_run
    ckpt = out / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["seq2seq"]["net_config"]["attention"] == "bahdanau"
    net, src_tok, tgt_tok = load_translator(ckpt)
    trained = objects["model"].net
    for (k, a), (_, b) in zip(sorted(net.state_dict().items()), sorted(trained.state_dict().items())):
        assert torch.equal(a, b), k
    assert src_tok.to_dict() == objects["datamodule"].src_tokenizer.to_dict()
    png = tmp_path / "att.png"
    main(["--ckpt", str(ckpt), "--beam-size", "3", "--nbest", "2", "--max-len", "12", "--attention-png", str(png),
          "May 3, 1987", "03.05.87"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all(line.count("\t") == 2 for line in lines)
    assert (tmp_path / "att-0.png").stat().st_size > 1000 and (tmp_path / "att-1.png").is_file()
    with pytest.raises(SystemExit):
        main(["--ckpt", str(tmp_path / "missing.ckpt"), "x"])


@pytest.mark.parametrize("attention", ["bahdanau", "none"])
def test_fast_dev_run_bible_en_es_on_a_small_tsv_fixture(hydra_compose, tmp_path, attention):
    from recur_attn.cli.train import train

    d = tmp_path / "bible"
    d.mkdir()
    en = ["In the beginning God created the heavens and the earth.", "God said, let there be light.",
          "And there was light.", "God saw the light, and saw that it was good."]
    es = ["EN el principio crió Dios los cielos y la tierra.", "Y dijo Dios: Sea la luz.", "Y fué la luz.",
          "Y vió Dios que la luz era buena."]
    rows = "".join(f"{e}\t{s}\n" for e, s in zip(en, es))
    for split, rep in (("train", 8), ("val", 1), ("test", 1)):
        (d / f"{split}.tsv").write_text(rows * rep, encoding="utf-8")
    cfg = set_paths(hydra_compose("train", ["experiment=bible_en_es", "debug=fdr", f"data.data_dir={d}",
                                            "data.src_vocab_size=120", "data.tgt_vocab_size=120",
                                            "data.min_frequency=1", "data.batch_size=4", "data.eval_batch_size=4",
                                            "model.max_len=12", "logger=csv", f"model.net.attention={attention}",
                                            *FAST]), tmp_path / "run")
    assert cfg.model.metrics == ["bleu4", "acc"]
    metrics, objects = train(cfg)
    assert {"val/bleu4", "test/bleu4", "test/acc", "test/loss"} <= set(metrics)
    assert 0.0 <= metrics["test/bleu4"] <= 100.0
    assert objects["datamodule"].src_tokenizer.kind == "bpe"
    assert objects["model"].net.attention_kind == attention
    assert len(list((tmp_path / "run" / "attention").glob("*.png"))) == (2 if attention != "none" else 0)
