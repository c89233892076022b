"""Parallel text: TSV reading, tokenizers, batches, determinism."""

import pytest
import torch

from recur_attn.data import BibleDataModule, TSVPairsDataModule
from recur_attn.data.translation import collate_pairs, read_tsv_pairs
from recur_attn.data.vocab import BOS, EOS, PAD, UNK, tokenizer_from_dict, train_tokenizer

EN = ["the house is red", "the dog runs", "a red dog", "the cat sleeps in the house", "my house",
      "the red cat", "a dog and a cat", "the house of the dog", "it runs", "the cat is red"]
ES = ["la casa es roja", "el perro corre", "un perro rojo", "el gato duerme en la casa", "mi casa",
      "el gato rojo", "un perro y un gato", "la casa del perro", "corre", "el gato es rojo"]


def _write_corpus(d, n_rep=3):
    d.mkdir(parents=True, exist_ok=True)
    lines = [f"{e}\t{s}" for e, s in zip(EN, ES)]
    (d / "train.tsv").write_text("\n".join(lines * n_rep) + "\n", encoding="utf-8")
    (d / "val.tsv").write_text("\n".join(lines[:4]) + "\n", encoding="utf-8")
    (d / "test.tsv").write_text("\n".join(lines[4:]) + "\n", encoding="utf-8")
    return d


def _dm(d, **kw):
    kw.setdefault("src_tokenizer", "bpe")
    kw.setdefault("tgt_tokenizer", "bpe")
    return TSVPairsDataModule(d / "train.tsv", d / "val.tsv", d / "test.tsv", src_vocab_size=60,
                              tgt_vocab_size=60, min_frequency=1, batch_size=4, **kw)


def test_bad_lines_name_file_and_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("a\tb\n\nc\td\te\n")
    with pytest.raises(ValueError, match=r"bad.tsv:3: expected 2 tab-separated fields"):
        read_tsv_pairs(p)
    p.write_text("a\tb\n\t x\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: empty source"):
        read_tsv_pairs(p)
    p.write_bytes(b"a\tb\nc\t\xff\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: not UTF-8"):
        read_tsv_pairs(p)
    with pytest.raises(FileNotFoundError):
        read_tsv_pairs(tmp_path / "none.tsv")


@pytest.mark.parametrize("kind", ["bpe", "word", "char"])
def test_tsv_module_is_deterministic(tmp_path, kind):
    d = _write_corpus(tmp_path / "c")
    a, b = _dm(d, seed=5, src_tokenizer=kind, tgt_tokenizer=kind), _dm(d, seed=5, src_tokenizer=kind,
                                                                        tgt_tokenizer=kind)
    a.setup("fit")
    b.setup("fit")
    assert a.dims == b.dims and a.src_tokenizer.to_dict() == b.src_tokenizer.to_dict()
    for x, y in zip(a.train_dataloader(), b.train_dataloader()):
        for k in x:
            assert torch.equal(x[k], y[k])
    # a different seed shuffles differently
    c = _dm(d, seed=6, src_tokenizer=kind, tgt_tokenizer=kind)
    assert not torch.equal(next(iter(c.train_dataloader()))["index"], next(iter(a.train_dataloader()))["index"])


@pytest.mark.parametrize("kind", ["bpe", "word", "char"])
def test_tokenizers_round_trip(kind):
    tok = train_tokenizer(kind, EN, vocab_size=80, min_frequency=1)
    for s in EN:
        ids = tok.encode(s)
        assert ids and min(ids) > UNK
        assert tok.decode(ids + [EOS, 7, 8]) == s  # stops at eos
        assert len(tok.tokens(ids)) == len(ids)
    again = tokenizer_from_dict(tok.to_dict())
    assert again.encode(EN[3]) == tok.encode(EN[3]) and again.size == tok.size
    assert UNK in tok.encode("zebra ω")


def test_collate_layout():
    b = collate_pairs([(0, [5, 6, 7], [8]), (1, [5], [9, 10, 11])])
    assert b["src"].tolist() == [[5, 6, 7, EOS], [5, EOS, PAD, PAD]]
    assert b["src_lengths"].tolist() == [4, 2]
    assert b["tgt_in"].tolist() == [[BOS, 8, PAD, PAD], [BOS, 9, 10, 11]]
    assert b["tgt_out"].tolist() == [[8, EOS, PAD, PAD], [9, 10, 11, EOS]]
    assert b["tgt_lengths"].tolist() == [2, 4]


def test_length_limit_applies_to_train_only(tmp_path):
    d = _write_corpus(tmp_path / "c")
    dm = _dm(d, src_tokenizer="word", tgt_tokenizer="word", max_src_tokens=3)
    dm.setup("fit")
    assert all(len(s.split()) <= 3 for s, _ in dm.pairs["train"])
    assert len(dm.pairs["test"]) == 6  # all kept


def test_bible_module_says_how_to_make_the_files(tmp_path):
    dm = BibleDataModule(data_dir=str(tmp_path / "bible"))
    with pytest.raises(FileNotFoundError, match="prepare_bible_pairs.py"):
        dm.setup("fit")


def _prepare_script():
    from conftest import load_script

    return load_script("prepare_bible_pairs")


def test_prepare_bible_pairs_parses_diatheke_output():
    P = _prepare_script()
    raw = (
        'Genesis 1:1: <w savlm="strong:H0430">God</w><w savlm="strong:H1254">created</w> the &amp; earth.\n'
        '<title canonical="true" type="psalm">A Psalm by David.</title> <lg sID="g1"/> <l level="1" sID="g2"/>'
        'Psalms 3:1: Yahweh, how my adversaries<l eID="g2" level="1"/>\n'
        '   have increased!\n'
        'I Samuel 2:3: his only born</q><q marker=""><w savlm="x">Son</w>.<note type="x">a note</note>\n'
        '(engWEB2015eb)\n'
    )
    v = P.parse_verses(raw)
    assert v == {
        ("Genesis", 1, 1): "God created the & earth.",
        ("Psalms", 3, 1): "Yahweh, how my adversaries have increased!",
        ("I Samuel", 2, 3): "his only born Son.",
    }
    # the split depends on the reference only
    ref = ("John", 3, 16)
    assert P.split_of(ref, 1.0, 2.0) == P.split_of(ref, 1.0, 2.0)
    shares = [P.split_of(("Genesis", c, k), 1.0, 2.0) for c in range(1, 51) for k in range(1, 40)]
    assert 0.9 < shares.count("train") / len(shares) < 1.0 and shares.count("test") > 0
