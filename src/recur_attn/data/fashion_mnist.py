"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) read from its idx files.

The four files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``)
are read from ``data_dir``; the default is where the Debian package
``dataset-fashion-mnist`` puts them (``/usr/share/datasets/fashion-mnist``).
Nothing is downloaded. 60,000 training images (``n_val`` of them held out for
validation) and 10,000 test images of 28x28 grey pixels, 10 classes.
Batches and ``dims``: see :mod:`recur_attn.data.digits`.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from recur_attn.data.digits import PixelDataModule

__all__ = ["FashionMNISTDataModule", "read_idx", "DEFAULT_DIR", "CLASSES"]

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_HOW = ("install the Debian package with `apt-get install dataset-fashion-mnist` (files under "
        f"{DEFAULT_DIR}), or put the four idx files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, optionally .gz) into data_dir")
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (plain or gzip) into an array; malformed files raise ValueError."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # a corrupt or truncated .gz
        raise ValueError(f"{path}: cannot read the idx file ({type(e).__name__}: {e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic number {data[:4]!r})")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise ValueError(f"{path}: unknown idx data type code 0x{code:02x}")
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(_DTYPES[code])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes) but the file holds {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


class FashionMNISTDataModule(PixelDataModule):
    """Fashion-MNIST from idx files under ``data_dir`` (see the module docstring)."""

    num_classes = 10
    channels = 1
    image_size = (28, 28)

    def __init__(self, data_dir: str = DEFAULT_DIR, layout: str = "image", batch_size: int = 64,
                 n_val: int = 5000, n_train: int | None = None, n_test: int | None = None, seed: int = 0,
                 num_workers: int = 0) -> None:
        super().__init__(layout, batch_size, n_val, n_train, seed, num_workers)
        self.data_dir = Path(data_dir)
        self.n_test = None if n_test is None else int(n_test)

    def _find(self, stem: str) -> Path:
        for name in (stem, stem + ".gz"):
            p = self.data_dir / name
            if p.is_file():
                return p
        raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found in {self.data_dir}: {_HOW}")

    def load(self):
        arrays = {key: read_idx(self._find(stem)) for key, stem in _FILES.items()}
        for split in ("train", "test"):
            xs, ys = arrays[f"{split}_x"], arrays[f"{split}_y"]
            if xs.ndim != 3 or xs.shape[1:] != (28, 28) or ys.ndim != 1 or len(xs) != len(ys):
                raise ValueError(f"Fashion-MNIST {split} files in {self.data_dir} have shapes {xs.shape} and "
                                 f"{ys.shape}; expected (N, 28, 28) images and (N,) labels")
        x = torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
        y = torch.from_numpy(arrays["train_y"].astype(np.int64))
        xt = torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1)
        yt = torch.from_numpy(arrays["test_y"].astype(np.int64))
        if self.n_test is not None:
            xt, yt = xt[: self.n_test], yt[: self.n_test]
        return x, y, xt, yt
