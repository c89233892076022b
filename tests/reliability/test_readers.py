"""Every file reader, fed truncated, corrupted and random files (hypothesis).

Each reader must either parse the file correctly or raise a clear error that names the
file: FileNotFoundError / ValueError (OSError for an undecodable image is accepted too,
it is what PIL raises and the caption module skips such images). Never a crash inside
torch (RuntimeError, TypeError, KeyError, ...) and never a hang (hypothesis' deadline).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# the readers, imported once here so that no example pays for an import
import recur_attn.data.captions  # noqa: E402,F401
import recur_attn.data.fashion_mnist  # noqa: E402,F401
import recur_attn.data.music  # noqa: E402,F401
import recur_attn.data.text  # noqa: E402,F401
import recur_attn.data.translation  # noqa: E402,F401
import recur_attn.utils.checkpoint  # noqa: E402,F401

SETTINGS = settings(max_examples=30, deadline=3000, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

VALID_JSB = {
    "train": [[[60, 64, 67], [62], []], [[70, 74]]],
    "valid": [[[55], [57, 60]]],
    "test": [[[21, 108]]],
}
VALID_KARPATHY = {"images": [
    {"filename": "a.png", "split": "train", "sentences": [{"tokens": ["a", "red", "circle"], "raw": "A red circle"}]},
    {"filename": "b.png", "split": "val", "sentences": [{"raw": "Two squares."}]},
]}
VALID_TSV = "hello\thola\nthe house\tla casa\n\nyes\tsi\n"


def _mutations():
    """(kind, a, b): truncate at a fraction, flip a byte, or insert bytes."""
    return st.one_of(
        st.tuples(st.just("truncate"), st.floats(0, 1), st.just(b"")),
        st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255).map(lambda v: bytes([v]))),
        st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=8)),
    )


def _mutate(data: bytes, mutation) -> bytes:
    kind, frac, extra = mutation
    i = int(frac * len(data))
    if kind == "truncate":
        return data[:i]
    if kind == "flip" and data:
        i = min(i, len(data) - 1)
        return data[:i] + bytes([data[i] ^ extra[0]]) + data[i + 1:]
    return data[:i] + extra + data[i:]


def _check(read, path: Path, ok_errors=(ValueError, FileNotFoundError)):
    """read(path) parses or raises one of ok_errors whose message names the file."""
    try:
        return read(path)
    except ok_errors as e:
        assert str(path) in str(e) or path.name in str(e), f"{type(e).__name__} does not name the file: {e}"
        return None


def _write(data: bytes, name: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="ra-fuzz-"))
    p = d / name
    p.write_bytes(data)
    return p


# ---- JSON music (JSB chorales) ---------------------------------------------------------
def test_jsb_reader_parses_valid_and_names_missing(tmp_path):
    from recur_attn.data.music import load_jsb_json

    p = tmp_path / "jsb.json"
    p.write_text(json.dumps(VALID_JSB))
    out = load_jsb_json(p)
    assert [len(out[s]) for s in ("train", "valid", "test")] == [2, 1, 1]
    assert out["train"][0].shape == (3, 88) and out["train"][0][0].sum() == 3
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_jsb_json(tmp_path / "nope.json")


@SETTINGS
@given(mutation=_mutations())
def test_jsb_reader_mutated(mutation):
    from recur_attn.data.music import load_jsb_json

    p = _write(_mutate(json.dumps(VALID_JSB).encode(), mutation), "jsb.json")
    out = _check(load_jsb_json, p)
    if out is not None:
        for rolls in out.values():
            for r in rolls:
                assert r.dim() == 2 and r.shape[1] == 88 and set(r.unique().tolist()) <= {0.0, 1.0}


@SETTINGS
@given(data=st.binary(max_size=300))
def test_jsb_reader_random_bytes(data):
    from recur_attn.data.music import load_jsb_json

    _check(load_jsb_json, _write(data, "jsb.json"))


@SETTINGS
@given(doc=st.recursive(st.none() | st.booleans() | st.integers(-5, 200) | st.text(max_size=3),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(
                            st.sampled_from(["train", "valid", "test", "x"]), c, max_size=4), max_leaves=20))
def test_jsb_reader_wrong_structure(doc):
    from recur_attn.data.music import load_jsb_json

    _check(load_jsb_json, _write(json.dumps(doc).encode(), "jsb.json"))


# ---- text ------------------------------------------------------------------------------
@SETTINGS
@given(data=st.binary(max_size=200))
def test_text_reader_random_bytes(data):
    from recur_attn.data.text import read_text_file

    p = _write(data, "corpus.txt")
    out = _check(read_text_file, p)
    if out is not None:
        assert out == data.decode("utf-8") and out.strip()


def test_text_reader_missing(tmp_path):
    from recur_attn.data.text import read_text_file

    with pytest.raises(FileNotFoundError, match="gone.txt"):
        read_text_file(tmp_path / "gone.txt")


# ---- TSV pairs -------------------------------------------------------------------------
def test_tsv_reader_valid_and_line_numbers(tmp_path):
    from recur_attn.data.translation import read_tsv_pairs

    p = tmp_path / "pairs.tsv"
    p.write_text(VALID_TSV)
    assert read_tsv_pairs(p) == [("hello", "hola"), ("the house", "la casa"), ("yes", "si")]
    p.write_text("a\tb\nno tab here\n")
    with pytest.raises(ValueError, match=r"pairs.tsv:2:"):
        read_tsv_pairs(p)


@SETTINGS
@given(mutation=_mutations())
def test_tsv_reader_mutated(mutation):
    from recur_attn.data.translation import read_tsv_pairs

    p = _write(_mutate(VALID_TSV.encode(), mutation), "pairs.tsv")
    out = _check(read_tsv_pairs, p)
    if out is not None:
        assert out and all(s and t and "\t" not in s + t for s, t in out)


@SETTINGS
@given(data=st.binary(max_size=200))
def test_tsv_reader_random_bytes(data):
    from recur_attn.data.translation import read_tsv_pairs

    _check(read_tsv_pairs, _write(data, "pairs.tsv"))


# ---- caption JSON (Karpathy split) -------------------------------------------------------
@SETTINGS
@given(mutation=_mutations())
def test_karpathy_reader_mutated(mutation):
    from recur_attn.data.captions import read_karpathy_json

    p = _write(_mutate(json.dumps(VALID_KARPATHY).encode(), mutation), "dataset_test.json")
    out = _check(read_karpathy_json, p)
    if out is not None:
        assert all({"filename", "split", "sentences"} <= set(im) for im in out)


@SETTINGS
@given(doc=st.recursive(st.none() | st.integers() | st.text(max_size=3),
                        lambda c: st.lists(c, max_size=3) | st.dictionaries(
                            st.sampled_from(["images", "filename", "split", "sentences", "raw"]), c, max_size=4),
                        max_leaves=15))
def test_karpathy_reader_wrong_structure(doc):
    from recur_attn.data.captions import read_karpathy_json

    _check(read_karpathy_json, _write(json.dumps(doc).encode(), "dataset_test.json"))


@SETTINGS
@given(data=st.binary(max_size=200))
def test_karpathy_reader_random_bytes(data):
    from recur_attn.data.captions import read_karpathy_json

    _check(read_karpathy_json, _write(data, "dataset_test.json"))


# ---- images ----------------------------------------------------------------------------
def _png_bytes() -> bytes:
    from PIL import Image

    im = Image.new("RGBA", (6, 5), (10, 200, 30, 128))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@SETTINGS
@given(mutation=_mutations())
def test_image_reader_mutated(mutation):
    from recur_attn.data.captions import load_image

    p = _write(_mutate(_png_bytes(), mutation), "img.png")
    out = _check(lambda q: load_image(q, 8), p, ok_errors=(ValueError, FileNotFoundError, OSError))
    if out is not None:
        assert out.shape == (3, 8, 8) and out.dtype == torch.uint8


# ---- checkpoints -------------------------------------------------------------------------
def _ckpt_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.randn(3, 2)}, "epoch": 1, "global_step": 7,
                "loops": {"x": [1, 2.5, "a"]}}, buf)
    return buf.getvalue()


@SETTINGS
@given(mutation=_mutations())
def test_checkpoint_reader_mutated(mutation):
    from recur_attn.utils.checkpoint import load_checkpoint

    p = _write(_mutate(_ckpt_bytes(), mutation), "last.ckpt")
    out = _check(load_checkpoint, p)
    if out is not None:
        assert isinstance(out, dict)


@SETTINGS
@given(data=st.binary(max_size=400))
def test_checkpoint_reader_random_bytes(data):
    from recur_attn.utils.checkpoint import load_checkpoint

    _check(load_checkpoint, _write(data, "last.ckpt"))


# ---- idx files (Fashion-MNIST) -------------------------------------------------------------
def _idx_bytes() -> bytes:
    import struct

    return b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 3, 4) + bytes(range(24))


@SETTINGS
@given(mutation=_mutations(), gz=st.booleans())
def test_idx_reader_mutated(mutation, gz):
    import gzip

    from recur_attn.data.fashion_mnist import read_idx

    raw = _idx_bytes()
    data = _mutate(gzip.compress(raw, mtime=0), mutation) if gz else _mutate(raw, mutation)
    p = _write(data, "train-images-idx3-ubyte" + (".gz" if gz else ""))
    out = _check(read_idx, p)
    if out is not None:
        assert out.ndim >= 0 and out.nbytes == len(gzip.decompress(data) if gz else data) - 4 - 4 * out.ndim


@SETTINGS
@given(data=st.binary(max_size=100))
def test_idx_reader_random_bytes(data):
    from recur_attn.data.fashion_mnist import read_idx

    _check(read_idx, _write(data, "t10k-labels-idx1-ubyte"))
