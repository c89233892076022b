"""Tokenizers for sequence-to-sequence data: characters, words, or BPE.

Every tokenizer has the same four special ids, first in its vocabulary::

    PAD = 0 ("<pad>"), BOS = 1 ("<s>"), EOS = 2 ("</s>"), UNK = 3 ("<unk>")

and the same interface: ``encode(text) -> list[int]`` (no specials added),
``decode(ids) -> str`` (stops at EOS, skips the other specials),
``tokens(ids) -> list[str]`` (one label a token, for attention maps),
``size``, and ``to_dict()`` / :func:`tokenizer_from_dict` to store it in a
checkpoint (strings only: loadable with ``weights_only=True``).

Word and BPE tokenizers are HuggingFace ``tokenizers`` models trained on the
training split (:func:`train_tokenizer`); training is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
KINDS = ("char", "word", "bpe")


class CharTokenizer:
    """One token a character; the vocabulary is the specials then ``chars``."""

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(dict.fromkeys(chars))  # unique, order kept
        for c in chars:
            if len(c) != 1:
                raise ValueError(f"CharTokenizer: vocabulary entries must be single characters, got {c!r}")
        self.itos = list(SPECIALS) + chars
        self.stoi = {c: i for i, c in enumerate(self.itos) if i >= len(SPECIALS)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        return cls(sorted({c for t in texts for c in t}))

    @property
    def size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(c, UNK) for c in text]

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.itos[i] for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": "".join(self.itos[len(SPECIALS):])}


class HFTokenizer:
    """A HuggingFace ``tokenizers.Tokenizer`` (word level or BPE) with our specials."""

    def __init__(self, tokenizer, kind: str) -> None:
        for i, s in enumerate(SPECIALS):
            if tokenizer.token_to_id(s) != i:
                raise ValueError(f"tokenizer: special token {s!r} must have id {i}")
        self.tok = tokenizer
        self.kind = kind

    @classmethod
    def train(cls, texts: Iterable[str], kind: str, vocab_size: int, min_frequency: int = 2) -> "HFTokenizer":
        from tokenizers import (
            Tokenizer,
            decoders,
            models,
            normalizers,
            pre_tokenizers,
            trainers,
        )

        if kind == "bpe":
            tok = Tokenizer(models.BPE(unk_token="<unk>"))
            tok.normalizer = normalizers.NFKC()
            tok.pre_tokenizer = pre_tokenizers.Metaspace()
            tok.decoder = decoders.Metaspace()
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                          special_tokens=list(SPECIALS), show_progress=False)
        elif kind == "word":
            tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
            tok.normalizer = normalizers.NFKC()
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
            trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                                special_tokens=list(SPECIALS), show_progress=False)
        else:
            raise ValueError(f"unknown tokenizer kind {kind!r}; valid: {', '.join(KINDS)}")
        tok.train_from_iterator(list(texts), trainer=trainer)
        return cls(tok, kind)

    @property
    def size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.tok.id_to_token(int(i)) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        keep = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i >= len(SPECIALS):
                keep.append(i)
        return self.tok.decode(keep, skip_special_tokens=True)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "json": self.tok.to_str()}


Tokenizer = CharTokenizer | HFTokenizer


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 8000,
                    min_frequency: int = 2) -> Tokenizer:
    """A tokenizer of ``kind`` ("char", "word", "bpe") trained on ``texts``."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind in ("word", "bpe"):
        return HFTokenizer.train(texts, kind, vocab_size, min_frequency)
    raise ValueError(f"unknown tokenizer kind {kind!r}; valid: {', '.join(KINDS)}")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Inverse of ``to_dict()``."""
    kind = d.get("kind")
    if kind == "char":
        return CharTokenizer(d["chars"])
    if kind in ("word", "bpe"):
        from tokenizers import Tokenizer as HFTok

        return HFTokenizer(HFTok.from_str(d["json"]), kind)
    raise ValueError(f"unknown tokenizer kind {kind!r}; valid: {', '.join(KINDS)}")
