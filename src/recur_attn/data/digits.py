"""Pixel classification data: scikit-learn's 8x8 handwritten digits (embedded, the
default), and the shared base of the pixel data sets (Fashion-MNIST in
:mod:`recur_attn.data.fashion_mnist`).

Batches, by ``layout``:

* ``"image"`` (for the 3-D Grid LSTM): ``{"x": (B, C, Hgt, Wid) float32 in [0, 1], "y": (B,) int64}``
* ``"rows"``: one image row a step, ``{"x": (B, Hgt, C*Wid), "y", "lengths": (B,) (= Hgt)}``
* ``"pixels"``: one pixel a step (scan-line order), ``{"x": (B, Hgt*Wid, C), "y", "lengths"}``

``dims``: ``image_size`` [Hgt, Wid], ``channels``, ``num_classes`` and ``output_size``
(the class count), ``input_size`` (features per step of the sequence layouts, or
C*Hgt*Wid for "image"), ``target`` "classification", ``readout`` "last",
``max_len``, ``sequence`` (False for "image").

Splits are made once from ``seed`` with a ``torch.Generator`` permutation, so the
same seed gives the same split on every machine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from recur_attn.data.base import SplitDataModule
from recur_attn.data.resumable import ResumableDataLoader

__all__ = ["PixelDataModule", "DigitsDataModule", "LAYOUTS"]

LAYOUTS = ("image", "rows", "pixels")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class _DictDataset(TensorDataset):
    """TensorDataset whose batches are dicts {"x", "y"} (and "lengths" for sequences)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, layout: str) -> None:
        super().__init__(x, y)
        self.layout = layout

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return self._shape(x, y)

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self._shape(self.tensors[0][idx], self.tensors[1][idx])

    def _shape(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()  # (..., C, H, W)
        if self.layout == "image":
            return {"x": x, "y": y}
        batched = x.dim() == 4
        xb = x if batched else x.unsqueeze(0)
        B, C, Hh, W = xb.shape
        if self.layout == "rows":
            seq = xb.permute(0, 2, 1, 3).reshape(B, Hh, C * W)  # (B, H, C*W)
        else:
            seq = xb.permute(0, 2, 3, 1).reshape(B, Hh * W, C)  # (B, H*W, C)
        lengths = torch.full((B,), seq.shape[1], dtype=torch.long)
        if not batched:
            return {"x": seq[0], "y": y, "lengths": lengths[0]}
        return {"x": seq, "y": y, "lengths": lengths}


def _collate(data):
    if isinstance(data, dict):
        return data
    return torch.utils.data.default_collate(data)


class PixelDataModule(SplitDataModule):
    """Base: subclasses implement :meth:`load` -> (train_x, train_y, test_x, test_y)
    with images as uint8 (N, C, H, W) (or float in [0, 1]) and labels int64 (N,).

    The train part is split into train / val (``n_val`` images, chosen by
    ``seed``); ``n_train`` (optional) keeps only the first n of the shuffled
    train images, for quick runs.
    """

    num_classes: int = 10
    channels: int = 1
    image_size: tuple[int, int] = (8, 8)

    def __init__(self, layout: str = "image", batch_size: int = 64, n_val: int = 300,
                 n_train: int | None = None, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; valid choices: {', '.join(LAYOUTS)}")
        self.layout = layout
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.n_val = _check_int("n_val", n_val, 1)
        self.n_train = None if n_train is None else _check_int("n_train", n_train, 1)
        self.seed = _check_int("seed", seed, -(2 ** 62))
        self.num_workers = _check_int("num_workers", num_workers, 0)
        self.datasets: dict[str, _DictDataset] = {}
        hgt, wid = self.image_size
        c = self.channels
        input_size = {"image": c * hgt * wid, "rows": c * wid, "pixels": c}[layout]
        max_len = {"image": 1, "rows": hgt, "pixels": hgt * wid}[layout]
        self.dims = {
            "image_size": [hgt, wid],
            "channels": c,
            "num_classes": self.num_classes,
            "output_size": self.num_classes,
            "input_size": input_size,
            "target": "classification",
            "readout": "last",
            "max_len": max_len,
            "sequence": layout != "image",
        }

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        x, y, xt, yt = self.load()
        if self.n_val >= len(x):
            raise ValueError(f"n_val={self.n_val} leaves no training images (the train part has {len(x)})")
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.n_val], perm[self.n_val:]
        if self.n_train is not None:
            train_idx = train_idx[: self.n_train]
        self.datasets = {
            "train": _DictDataset(x[train_idx], y[train_idx], self.layout),
            "val": _DictDataset(x[val_idx], y[val_idx], self.layout),
            "test": _DictDataset(xt, yt, self.layout),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"call setup() before {split}_dataloader()")
        loader_cls = ResumableDataLoader if shuffle else DataLoader  # exact mid-epoch resume
        return loader_cls(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(self.seed + 1) if shuffle else None,
                          num_workers=self.num_workers, collate_fn=_collate)



class DigitsDataModule(PixelDataModule):
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes; shipped with
    scikit-learn, nothing is downloaded). Pixel values 0..16 are scaled to [0, 1].

    A fixed test set of ``n_test`` images is drawn from all 1,797 with ``seed``; of
    the rest, ``n_val`` are for validation. See the module docstring for the batches.
    """

    num_classes = 10
    channels = 1
    image_size = (8, 8)

    def __init__(self, layout: str = "image", batch_size: int = 64, n_val: int = 200, n_test: int = 360,
                 n_train: int | None = None, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__(layout, batch_size, n_val, n_train, seed, num_workers)
        self.n_test = _check_int("n_test", n_test, 1)

    def load(self):
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:  # pragma: no cover - scikit-learn is a dependency
            raise ImportError("DigitsDataModule needs scikit-learn: pip install scikit-learn") from e
        d = load_digits()
        images = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
        labels = torch.as_tensor(d.target, dtype=torch.long)
        if self.n_test + self.n_val >= len(images):
            raise ValueError(f"n_test + n_val = {self.n_test + self.n_val} leaves no training digits of {len(images)}")
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.seed + 7))
        test, rest = perm[: self.n_test], perm[self.n_test:]
        return images[rest], labels[rest], images[test], labels[test]
