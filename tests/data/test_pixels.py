"""Pixel data: scikit-learn digits, Fashion-MNIST idx reading."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from recur_attn.data.digits import DigitsDataModule
from recur_attn.data.fashion_mnist import DEFAULT_DIR, FashionMNISTDataModule, read_idx


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(batch_size=32, seed=3)
    dm.setup()
    return dm


def test_digits_image_batches_and_split(digits):
    b = next(iter(digits.train_dataloader()))
    assert b["x"].shape == (32, 1, 8, 8) and b["x"].dtype == torch.float32
    assert b["y"].shape == (32,) and b["y"].dtype == torch.int64
    assert 0.0 <= float(b["x"].min()) and float(b["x"].max()) <= 1.0
    sizes = {k: len(v) for k, v in digits.datasets.items()}
    assert sizes == {"train": 1797 - 360 - 200, "val": 200, "test": 360}
    assert digits.dims["image_size"] == [8, 8] and digits.dims["num_classes"] == 10
    assert digits.dims["channels"] == 1 and digits.dims["target"] == "classification"
    # no image is in two splits
    flat = {k: {tuple(v.tensors[0][i].flatten().tolist()) for i in range(len(v))} for k, v in digits.datasets.items()}
    assert not (flat["test"] & flat["val"])
    # same seed -> same split
    again = DigitsDataModule(seed=3)
    again.setup()
    torch.testing.assert_close(again.datasets["test"].tensors[0], digits.datasets["test"].tensors[0])


@pytest.mark.parametrize("layout, shape, input_size", [("rows", (4, 8, 8), 8), ("pixels", (4, 64, 1), 1)])
def test_digits_sequence_layouts(layout, shape, input_size):
    dm = DigitsDataModule(layout=layout, batch_size=4, seed=0)
    dm.setup()
    b = next(iter(dm.val_dataloader()))
    assert b["x"].shape == shape and torch.all(b["lengths"] == shape[1])
    assert dm.dims["input_size"] == input_size and dm.dims["sequence"] is True
    img = DigitsDataModule(layout="image", batch_size=4, seed=0)
    img.setup()
    bi = next(iter(img.val_dataloader()))
    torch.testing.assert_close(b["x"].reshape(4, -1), bi["x"].reshape(4, -1))  # one channel: same order
    with pytest.raises(ValueError, match="valid choices"):
        DigitsDataModule(layout="columns")


def _write_idx(path: Path, arr: np.ndarray, code: int = 0x08, gz: bool = False) -> None:
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


def test_read_idx_and_malformed_files(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", arr)
    _write_idx(tmp_path / "a.gz", arr, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="bad.*magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="short.*holds 3 bytes"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_from_a_small_fixture(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz=True)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n, dtype=np.uint8))
    dm = FashionMNISTDataModule(data_dir=str(tmp_path), n_val=2, batch_size=4)
    dm.setup()
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 10, "val": 2, "test": 5}
    b = next(iter(dm.test_dataloader()))
    assert b["x"].shape == (4, 1, 28, 28) and b["x"].max() <= 1.0 and b["y"].dtype == torch.int64
    assert dm.dims["image_size"] == [28, 28]


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path):
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dm.setup()


@pytest.mark.slow
@pytest.mark.skipif(not Path(DEFAULT_DIR, "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_package():
    dm = FashionMNISTDataModule(n_train=100, n_test=50, n_val=100)
    dm.setup()
    assert len(dm.datasets["test"]) == 50 and len(dm.datasets["train"]) == 100
    labels = dm.datasets["val"].tensors[1]
    assert labels.min() >= 0 and labels.max() <= 9
