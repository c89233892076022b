"""Parallel text (source -> target pairs) for sequence-to-sequence models.

Batches are dicts of tensors::

    {"src": (B, S) long      source ids, EOS appended, PAD after,
     "src_lengths": (B,)     true source lengths (EOS included),
     "tgt_in": (B, T) long   [BOS, y_1, ..., y_n], PAD after,
     "tgt_out": (B, T) long  [y_1, ..., y_n, EOS], PAD after,
     "tgt_lengths": (B,)     n + 1,
     "index": (B,)           the pair's index in its split}

``dims`` (filled into the model's ``???`` keys): ``src_vocab_size``,
``tgt_vocab_size``, ``pad_id``, ``bos_id``, ``eos_id``. The tokenizers are
``datamodule.src_tokenizer`` / ``datamodule.tgt_tokenizer``; the raw strings
of each split are ``datamodule.pairs[split]``.

:class:`TSVPairsDataModule` reads any parallel corpus in TSV files (one pair
a line: ``source<TAB>target``); :class:`BibleDataModule` reads the English ->
Spanish verse pairs that ``scripts/prepare_bible_pairs.py`` writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from recur_attn.data.base import SplitDataModule
from recur_attn.data.resumable import ResumableDataLoader
from recur_attn.data.vocab import BOS, EOS, KINDS, PAD, Tokenizer, train_tokenizer

SPLITS = ("train", "val", "test")


def read_tsv_pairs(path: str | Path) -> list[tuple[str, str]]:
    """Read ``source<TAB>target`` lines. Blank lines are skipped; any other line
    without exactly two non-empty fields is a ValueError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such TSV file: {path}")
    pairs = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):  # lines end at "\n" only, as editors count them
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise ValueError(f"{path}:{lineno}: expected 2 tab-separated fields (source, target), "
                                 f"got {len(fields)}: {line[:80]!r}")
            src, tgt = fields[0].strip(), fields[1].strip()
            if not src or not tgt:
                raise ValueError(f"{path}:{lineno}: empty {'source' if not src else 'target'} field")
            pairs.append((src, tgt))
    if not pairs:
        raise ValueError(f"{path}: no pairs in the file")
    return pairs


class PairsDataset(Dataset):
    """Token-id pairs of one split."""

    def __init__(self, src: list[list[int]], tgt: list[list[int]]) -> None:
        if len(src) != len(tgt):
            raise ValueError(f"{len(src)} sources but {len(tgt)} targets")
        self.src, self.tgt = src, tgt

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[int, list[int], list[int]]:
        return i, self.src[i], self.tgt[i]


def collate_pairs(items: list[tuple[int, list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Pad a list of (index, src ids, tgt ids) into the batch dict of the module docstring."""
    B = len(items)
    S = max(len(s) for _, s, _ in items) + 1
    T = max(len(t) for _, _, t in items) + 1
    src = torch.full((B, S), PAD, dtype=torch.long)
    tgt_in = torch.full((B, T), PAD, dtype=torch.long)
    tgt_out = torch.full((B, T), PAD, dtype=torch.long)
    src_lengths = torch.empty(B, dtype=torch.long)
    tgt_lengths = torch.empty(B, dtype=torch.long)
    index = torch.empty(B, dtype=torch.long)
    for b, (i, s, t) in enumerate(items):
        n, m = len(s), len(t)
        src[b, :n] = torch.tensor(s, dtype=torch.long)
        src[b, n] = EOS
        tgt_in[b, 0] = BOS
        tgt_in[b, 1:m + 1] = torch.tensor(t, dtype=torch.long)
        tgt_out[b, :m] = torch.tensor(t, dtype=torch.long)
        tgt_out[b, m] = EOS
        src_lengths[b], tgt_lengths[b], index[b] = n + 1, m + 1, i
    return {"src": src, "src_lengths": src_lengths, "tgt_in": tgt_in, "tgt_out": tgt_out,
            "tgt_lengths": tgt_lengths, "index": index}


class PairsDataModule(SplitDataModule):
    """Base: string pairs per split -> tokenizers trained on the train split -> batches.

    Subclasses implement :meth:`load_pairs` returning {"train": [(src, tgt), ...],
    "val": ..., "test": ...}. Training pairs longer than ``max_src_tokens`` /
    ``max_tgt_tokens`` (after tokenisation; 0 = no limit) are dropped; validation
    and test pairs are all kept.
    """

    def __init__(self, src_tokenizer: str = "char", tgt_tokenizer: str = "char",
                 src_vocab_size: int = 8000, tgt_vocab_size: int = 8000, min_frequency: int = 2,
                 max_src_tokens: int = 0, max_tgt_tokens: int = 0, batch_size: int = 64,
                 eval_batch_size: int | None = None, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        for name, kind in (("src_tokenizer", src_tokenizer), ("tgt_tokenizer", tgt_tokenizer)):
            if kind not in KINDS:
                raise ValueError(f"{name}: unknown kind {kind!r}; valid: {', '.join(KINDS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.src_kind, self.tgt_kind = src_tokenizer, tgt_tokenizer
        self.src_vocab_limit, self.tgt_vocab_limit = int(src_vocab_size), int(tgt_vocab_size)
        self.min_frequency = int(min_frequency)
        self.max_src_tokens, self.max_tgt_tokens = int(max_src_tokens), int(max_tgt_tokens)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.pairs: dict[str, list[tuple[str, str]]] | None = None
        self.src_tokenizer: Tokenizer | None = None
        self.tgt_tokenizer: Tokenizer | None = None
        self.datasets: dict[str, PairsDataset] = {}
        self.dims: dict[str, Any] | None = None  # known after setup()

    def load_pairs(self) -> dict[str, list[tuple[str, str]]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build(self) -> None:
        if self.pairs is not None:
            return
        pairs = self.load_pairs()
        for split in SPLITS:
            if not pairs.get(split):
                raise ValueError(f"{type(self).__name__}: the {split} split is empty")
        train = pairs["train"]
        self.src_tokenizer = train_tokenizer(self.src_kind, (s for s, _ in train), self.src_vocab_limit,
                                             self.min_frequency)
        self.tgt_tokenizer = train_tokenizer(self.tgt_kind, (t for _, t in train), self.tgt_vocab_limit,
                                             self.min_frequency)
        for split in SPLITS:
            src = [self.src_tokenizer.encode(s) for s, _ in pairs[split]]
            tgt = [self.tgt_tokenizer.encode(t) for _, t in pairs[split]]
            keep = [i for i in range(len(src)) if len(src[i]) > 0 and len(tgt[i]) > 0]
            if split == "train":
                keep = [i for i in keep
                        if (not self.max_src_tokens or len(src[i]) <= self.max_src_tokens)
                        and (not self.max_tgt_tokens or len(tgt[i]) <= self.max_tgt_tokens)]
            if not keep:
                raise ValueError(f"{type(self).__name__}: no {split} pair left after tokenisation / length limits")
            pairs[split] = [pairs[split][i] for i in keep]
            self.datasets[split] = PairsDataset([src[i] for i in keep], [tgt[i] for i in keep])
        self.pairs = pairs
        self.dims = {"src_vocab_size": self.src_tokenizer.size, "tgt_vocab_size": self.tgt_tokenizer.size,
                     "pad_id": PAD, "bos_id": BOS, "eos_id": EOS}

    def setup(self, stage: str | None = None) -> None:
        self._build()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self._build()
        gen = torch.Generator().manual_seed(self.seed) if shuffle else None
        loader_cls = ResumableDataLoader if shuffle else DataLoader  # exact mid-epoch resume
        return loader_cls(self.datasets[split], batch_size=self.batch_size if split == "train" else self.eval_batch_size,
                          shuffle=shuffle, generator=gen, collate_fn=collate_pairs,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)



class TSVPairsDataModule(PairsDataModule):
    """Any parallel corpus from TSV files (``source<TAB>target`` a line).

    Args:
        train_path, val_path, test_path: the three TSV files.
        others: see :class:`PairsDataModule` (tokenizer kinds "char", "word", "bpe").
    """

    def __init__(self, train_path: str, val_path: str, test_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.paths = {"train": Path(train_path), "val": Path(val_path), "test": Path(test_path)}

    def load_pairs(self) -> dict[str, list[tuple[str, str]]]:
        return {split: read_tsv_pairs(p) for split, p in self.paths.items()}


class BibleDataModule(TSVPairsDataModule):
    """English (World English Bible) -> Spanish (Reina-Valera 1909) verse pairs.

    Reads ``{data_dir}/{train,val,test}.tsv`` as written by
    ``python scripts/prepare_bible_pairs.py --out {data_dir}`` (the Debian
    packages ``diatheke sword-text-web sword-text-sparv``); BPE by default.
    """

    def __init__(self, data_dir: str, src_tokenizer: str = "bpe", tgt_tokenizer: str = "bpe",
                 **kwargs: Any) -> None:
        d = Path(data_dir)
        super().__init__(d / "train.tsv", d / "val.tsv", d / "test.tsv", src_tokenizer=src_tokenizer,
                         tgt_tokenizer=tgt_tokenizer, **kwargs)
        self.data_dir = d

    def load_pairs(self) -> dict[str, list[tuple[str, str]]]:
        missing = [str(p) for p in self.paths.values() if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"Bible verse pairs not found ({', '.join(missing)}). Make them with:\n"
                f"  apt-get install -y diatheke sword-text-web sword-text-sparv\n"
                f"  python scripts/prepare_bible_pairs.py --out {self.data_dir}"
            )
        return super().load_pairs()
