"""Image-caption data sets: synthetic shapes scenes, Karpathy-split JSON sets
(Flickr8k / Flickr30k / COCO) and the emoji set, with a vocabulary.

Batches are dicts of tensors::

    {"images":   (B, 3, S, S) float32, normalised (torchvision Normalize, ImageNet mean/std),
     "captions": (B, T) int64: <start> w_1 .. w_n <end> <pad> ...,
     "lengths":  (B,) int64: n + 2 (the tokens up to and including <end>),
     "index":    (B,) int64: the image's position in its split (``references(split)[index]``
                 gives all its reference captions, as lists of words),
     # shapes scenes only:
     "boxes":    (B, M, 4) int64: x0, y0, x1, y1 (pixels, x1/y1 exclusive) of each object,
                 -1 rows for absent objects (M = max_objects),
     "objects":  (B, M, 2) int64: (colour index, shape index) of each object, -1 if absent}

Training batches hold one (image, caption) pair per item; validation and test
batches hold one item per image (its first reference as the caption).
``dims``: ``vocab_size`` (known after ``setup()``), ``image_size``, ``max_len``.

Nothing is downloaded: the shapes set is generated from ``seed``; the others
are read from ``data_dir`` (see :class:`KarpathyCaptionDataModule` and
``scripts/prepare_emoji_captions.py``).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from recur_attn.data.base import SplitDataModule
from recur_attn.data.resumable import ResumableDataLoader

log = logging.getLogger(__name__)

__all__ = [
    "COLOURS", "IMAGENET_MEAN", "IMAGENET_STD", "KarpathyCaptionDataModule", "SHAPES", "ShapesCaptionDataModule",
    "Vocabulary", "caption_collate", "generate_shapes", "make_scene", "read_karpathy_json", "scene_captions",
    "tokenize",
]

PAD, START, END, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")


def tokenize(text: str) -> list[str]:
    """Lower-case words (letters, digits, apostrophes)."""
    return re.findall(r"[a-z0-9']+", text.lower())


class Vocabulary:
    """Words <-> ids with the specials <pad>=0, <start>=1, <end>=2, <unk>=3."""

    def __init__(self, itos: Sequence[str]) -> None:
        itos = list(itos)
        if tuple(itos[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the specials {SPECIALS}, got {itos[:4]}")
        if len(set(itos)) != len(itos):
            raise ValueError("a vocabulary has duplicate words")
        self.itos = itos
        self.stoi = {w: i for i, w in enumerate(itos)}

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        """Words seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        if int(min_count) < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count!r}")
        counts = Counter(w for c in captions for w in c)
        words = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                       key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> list[int]:
        """<start> ids... <end>, unknown words -> <unk>."""
        return [START] + [self.stoi.get(w, UNK) for w in words] + [END]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first <end> (specials <pad>/<start> dropped)."""
        out = []
        for i in ids:
            i = int(i)
            if i == END:
                break
            if i in (PAD, START):
                continue
            out.append(self.itos[i])
        return out


# --------------------------------------------------------------------------- shapes scenes
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40), "green": (40, 200, 60), "blue": (50, 90, 240),
    "yellow": (240, 220, 40), "magenta": (220, 60, 220), "cyan": (40, 220, 220),
}
SHAPES = ("circle", "square", "triangle")


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    if shape == "triangle":  # apex up: inside when below the two slanted edges and above the base
        top, base = cy - r, cy + r * 0.8
        half = (yy - top) / (base - top) * r  # half-width grows towards the base
        return (yy >= top) & (yy <= base) & (np.abs(xx - cx) <= half)
    raise ValueError(f"unknown shape {shape!r}; valid: {SHAPES}")


def _relation(a: dict, b: dict) -> str:
    """Where a is relative to b (image y grows downwards)."""
    dx, dy = b["cx"] - a["cx"], b["cy"] - a["cy"]
    if abs(dy) >= abs(dx):
        return "above" if dy > 0 else "below"
    return "left of" if dx > 0 else "right of"


def scene_captions(objects: Sequence[dict]) -> list[list[str]]:
    """Every ordering of the objects as a chain "a red circle above a blue square
    left of a green triangle"; the first is left-to-right (by centre x)."""
    order = sorted(range(len(objects)), key=lambda i: (objects[i]["cx"], objects[i]["cy"]))
    perms = [tuple(order)] + [p for p in itertools.permutations(order) if p != tuple(order)]
    out = []
    for p in perms:
        words: list[str] = []
        for k, i in enumerate(p):
            if k:
                words += _relation(objects[p[k - 1]], objects[i]).split()
            words += ["a", objects[i]["colour"], objects[i]["shape"]]
        out.append(words)
    return out


def make_scene(rng: np.random.Generator, image_size: int = 64, min_objects: int = 1, max_objects: int = 3,
               radius: tuple[float, float] | None = None, margin: float | None = None
               ) -> tuple[np.ndarray, list[dict]]:
    """One scene: black background, 1..3 objects of distinct (colour, shape),
    no overlap, and for every pair |dx| and |dy| of the centres differing by at
    least ``margin`` pixels (so "above"/"left of" is never a close call).
    ``radius`` (min, max) and ``margin`` default to 6-10 and 4 pixels at 64 px, scaled.
    Returns (image uint8 (S, S, 3), objects with colour, shape, cx, cy, box)."""
    S = image_size
    radius = radius or (S * 6 / 64, S * 10 / 64)  # defaults scale with the image: 6-10 px at 64
    margin = S / 16 if margin is None else margin
    n = int(rng.integers(min_objects, max_objects + 1))
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    for _ in range(1000):
        picks = rng.choice(len(combos), size=n, replace=False)
        objs = []
        for k in picks:
            r = float(rng.uniform(*radius))
            cx, cy = (float(v) for v in rng.uniform(r + 1, S - r - 1, size=2))
            objs.append({"colour": combos[k][0], "shape": combos[k][1], "cx": cx, "cy": cy, "r": r})
        ok = True
        for a, b in itertools.combinations(objs, 2):
            dx, dy = abs(a["cx"] - b["cx"]), abs(a["cy"] - b["cy"])
            if max(dx, dy) < a["r"] + b["r"] + 2 or abs(dx - dy) < margin:
                ok = False
                break
        if ok:
            break
    else:  # pragma: no cover - 1000 rejections do not happen with the defaults
        raise RuntimeError("could not place the objects; use a larger image_size or smaller radius")
    img = np.zeros((S, S, 3), dtype=np.uint8)
    for o in objs:
        m = _shape_mask(o["shape"], o["cx"], o["cy"], o["r"], S)
        img[m] = COLOURS[o["colour"]]
        ys, xs = np.nonzero(m)
        o["box"] = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return img, objs


def generate_shapes(n: int, seed: int, split: str, image_size: int = 64, min_objects: int = 1,
                    max_objects: int = 3) -> dict[str, Any]:
    """``n`` scenes from the generator seeded by (seed, split). Returns images
    uint8 (n, 3, S, S), boxes (n, M, 4), objects (n, M, 2) and captions (a list
    of reference lists, the left-to-right caption first)."""
    key = [int(seed) & 0xFFFFFFFF] + [ord(c) for c in split]
    rng = np.random.default_rng(np.random.SeedSequence(key))
    M = max_objects
    images = np.zeros((n, image_size, image_size, 3), dtype=np.uint8)
    boxes = np.full((n, M, 4), -1, dtype=np.int64)
    objects = np.full((n, M, 2), -1, dtype=np.int64)
    colours = list(COLOURS)
    captions = []
    for i in range(n):
        img, objs = make_scene(rng, image_size, min_objects, max_objects)
        images[i] = img
        for k, o in enumerate(objs):
            boxes[i, k] = o["box"]
            objects[i, k] = (colours.index(o["colour"]), SHAPES.index(o["shape"]))
        captions.append(scene_captions(objs))
    return {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), "boxes": torch.from_numpy(boxes),
            "objects": torch.from_numpy(objects), "captions": captions}


# --------------------------------------------------------------------------- data sets
class CaptionDataset(Dataset):
    """Items: (image index, caption index) pairs over ``captions`` (lists of
    reference word lists). ``load(i)`` returns the uint8 (3, S, S) image."""

    def __init__(self, load, n_images: int, captions: list[list[list[str]]], vocab: Vocabulary,
                 pairs: list[tuple[int, int]], normalize, max_words: int, extra: dict[str, torch.Tensor]) -> None:
        self.load, self.n_images, self.captions, self.vocab = load, n_images, captions, vocab
        self.pairs, self.normalize, self.max_words, self.extra = pairs, normalize, max_words, extra

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        i, j = self.pairs[k]
        img = self.normalize(self.load(i).float() / 255.0)
        ids = self.vocab.encode(self.captions[i][j][: self.max_words])
        item = {"images": img, "captions": torch.tensor(ids, dtype=torch.long), "index": torch.tensor(i)}
        for key, v in self.extra.items():
            item[key] = v[i]
        return item


def caption_collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    caps = [it["captions"] for it in items]
    lengths = torch.tensor([len(c) for c in caps], dtype=torch.long)
    padded = torch.nn.utils.rnn.pad_sequence(caps, batch_first=True, padding_value=PAD)
    out = {"images": torch.stack([it["images"] for it in items]), "captions": padded, "lengths": lengths,
           "index": torch.stack([it["index"] for it in items])}
    for key in items[0]:
        if key not in out:
            out[key] = torch.stack([it[key] for it in items])
    return out


class _CaptionDataModule(SplitDataModule):
    """Shared set-up: vocabulary from the training captions, loaders, ``dims``."""

    def __init__(self, batch_size: int, eval_batch_size: int | None, num_workers: int, min_count: int,
                 max_words: int, image_size: int, train_captions: str, seed: int) -> None:
        super().__init__()
        if train_captions not in ("all", "first"):
            raise ValueError(f"train_captions must be 'all' or 'first', got {train_captions!r}")
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.num_workers, self.min_count, self.max_words = int(num_workers), int(min_count), int(max_words)
        self.image_size, self.train_captions, self.seed = int(image_size), train_captions, int(seed)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.vocab: Vocabulary | None = None
        self.dims: dict[str, Any] | None = None  # known after setup()
        self._refs: dict[str, list[list[list[str]]]] = {}
        self._sets: dict[str, CaptionDataset] = {}

    def _normalizer(self):
        from torchvision.transforms import v2

        return v2.Normalize(self.mean, self.std)

    def _load_splits(self) -> dict[str, dict[str, Any]]:  # pragma: no cover - abstract
        """split -> {"load": i -> uint8 (3,S,S), "n": int, "captions": [[words]], "extra": {...}}"""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self._sets:
            return
        splits = self._load_splits()
        self.vocab = Vocabulary.build((c[: self.max_words] for caps in splits["train"]["captions"] for c in caps),
                                      self.min_count)
        norm = self._normalizer()
        for name, s in splits.items():
            caps = s["captions"]
            if name == "train" and self.train_captions == "all":
                pairs = [(i, j) for i, c in enumerate(caps) for j in range(len(c))]
            else:
                pairs = [(i, 0) for i in range(len(caps))]
            self._refs[name] = caps
            self._sets[name] = CaptionDataset(s["load"], len(caps), caps, self.vocab, pairs, norm, self.max_words,
                                              s.get("extra", {}))
        longest = max(len(c) for s in splits.values() for caps in s["captions"] for c in caps)
        self.dims = {"vocab_size": len(self.vocab), "image_size": self.image_size,
                     "max_len": min(longest, self.max_words) + 2}
        log.info("%s: vocabulary %d words (min_count=%d); images train/val/test = %s", type(self).__name__,
                 len(self.vocab), self.min_count, [len(self._refs[k]) for k in SPLITS if k in self._refs])

    def references(self, split: str) -> list[list[list[str]]]:
        """All reference captions (word lists) of every image of ``split``."""
        self.setup()
        return self._refs[split]

    def dataset(self, split: str) -> CaptionDataset:
        self.setup()
        return self._sets[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed) if shuffle else None
        bs = self.batch_size if split == "train" else self.eval_batch_size
        loader_cls = ResumableDataLoader if shuffle else DataLoader  # exact mid-epoch resume
        return loader_cls(self.dataset(split), batch_size=bs, shuffle=shuffle, generator=g,
                          num_workers=self.num_workers, collate_fn=caption_collate,
                          persistent_workers=self.num_workers > 0)



class ShapesCaptionDataModule(_CaptionDataModule):
    """Synthetic captioned scenes: 1..``max_objects`` coloured shapes (6 colours
    x circle/square/triangle, distinct pairs) on black, captioned by the grammar
    ``a <colour> <shape> [(above|below|left of|right of) a <colour> <shape>]...``.
    Every ordering of the objects is a reference (the left-to-right one first);
    ``train_captions="first"`` trains on the left-to-right caption only. Each
    split is generated from (seed, split); batches carry the ground-truth
    ``boxes`` and ``objects`` (see the module docstring)."""

    def __init__(self, n_train: int = 8000, n_val: int = 500, n_test: int = 1000, image_size: int = 64,
                 min_objects: int = 1, max_objects: int = 3, batch_size: int = 64, eval_batch_size: int | None = 250,
                 num_workers: int = 0, min_count: int = 1, train_captions: str = "first", seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, min_count, 50, image_size, train_captions, seed)
        if not 1 <= int(min_objects) <= int(max_objects) <= 3:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= 3, got {min_objects}, {max_objects}")
        self.sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)

    def _load_splits(self) -> dict[str, dict[str, Any]]:
        out = {}
        for split, n in self.sizes.items():
            g = generate_shapes(n, self.seed, split, self.image_size, self.min_objects, self.max_objects)
            imgs = g["images"]
            out[split] = {"load": imgs.__getitem__, "captions": g["captions"],
                          "extra": {"boxes": g["boxes"], "objects": g["objects"]}}
        return out


# --------------------------------------------------------------------------- Karpathy JSON sets
def read_karpathy_json(path: Path) -> list[dict[str, Any]]:
    """The ``images`` of a Karpathy-split JSON file, checked: each with
    ``filename``, ``split`` and ``sentences`` (``tokens`` or ``raw``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Put the Karpathy-split JSON there (e.g. dataset_flickr8k.json from "
            f"https://cs.stanford.edu/people/karpathy/deepimagesent/ with the Flickr8k images in the image "
            f"folder), or run scripts/prepare_emoji_captions.py for the emoji set; nothing is downloaded.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 JSON ({err.reason} at byte {err.start})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: expected an object with an 'images' list (Karpathy split format)")
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict):
            raise ValueError(f"{path}: images[{k}] must be an object, got {type(im).__name__}")
        missing = [key for key in ("filename", "split", "sentences") if key not in im]
        if missing:
            raise ValueError(f"{path}: images[{k}] lacks {missing}")
        if im["split"] not in ("train", "val", "test", "restval"):
            raise ValueError(f"{path}: images[{k}] ({im['filename']}) has split {im['split']!r}; valid: "
                             f"train, val, test, restval")
        if not im["sentences"]:
            raise ValueError(f"{path}: images[{k}] ({im['filename']}) has no sentences")
    return data["images"]


def load_image(path: Path, size: int) -> torch.Tensor:
    """Decode with PIL, flatten transparency onto white, resize to size x size:
    uint8 (3, size, size). A missing file is a FileNotFoundError, an undecodable one a
    ValueError naming it."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8).copy()
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, zlib/struct errors...
        raise ValueError(f"{path}: cannot decode the image ({type(err).__name__}: {err})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


class KarpathyCaptionDataModule(_CaptionDataModule):
    """Flickr8k / Flickr30k / COCO (and the emoji set) in the Karpathy split
    format: ``data_dir/json_name`` (e.g. ``dataset_flickr8k.json``) and the
    images under ``data_dir/image_dir`` (joined with each entry's ``filepath``
    when present, as in COCO). ``restval`` images join the training split when
    ``restval_to_train``. Every image is decoded once in ``setup()``; images
    that fail are logged by path and skipped, with their count. Captions are
    cut to ``max_words`` words; the vocabulary keeps training words seen at
    least ``min_count`` times."""

    def __init__(self, data_dir: str, json_name: str = "dataset_flickr8k.json", image_dir: str = "Flicker8k_Dataset",
                 image_size: int = 224, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 0, min_count: int = 5, max_words: int = 50, train_captions: str = "all",
                 restval_to_train: bool = True, seed: int = 0) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, min_count, max_words, image_size, train_captions,
                         seed)
        self.json_path = Path(data_dir) / json_name
        self.image_root = Path(data_dir) / image_dir
        self.restval_to_train = bool(restval_to_train)
        self.skipped: list[str] = []

    def _load_splits(self) -> dict[str, dict[str, Any]]:
        entries = read_karpathy_json(self.json_path)
        if not self.image_root.is_dir():
            raise FileNotFoundError(f"image folder {self.image_root} does not exist (the images of {self.json_path})")
        paths: dict[str, list[Path]] = {s: [] for s in SPLITS}
        caps: dict[str, list[list[list[str]]]] = {s: [] for s in SPLITS}
        self.skipped = []
        for im in entries:
            split = im["split"]
            if split == "restval":
                if not self.restval_to_train:
                    continue
                split = "train"
            p = self.image_root / im.get("filepath", "") / im["filename"]
            try:
                load_image(p, 8)  # a full decode (PIL decodes everything before resizing)
            except Exception as err:  # noqa: BLE001 - any decoder error means: skip this image
                log.warning("skipping image that failed to decode: %s (%s: %s)", p, type(err).__name__, err)
                self.skipped.append(str(p))
                continue
            refs = [list(s["tokens"]) if "tokens" in s else tokenize(s["raw"]) for s in im["sentences"]]
            paths[split].append(p)
            caps[split].append(refs)
        if self.skipped:
            log.warning("skipped %d of %d images that failed to decode (listed above)", len(self.skipped),
                        len(entries))
        for s in SPLITS:
            if not caps[s]:
                raise ValueError(f"{self.json_path}: the {s!r} split has no (decodable) images")
        size = self.image_size
        return {s: {"load": (lambda i, ps=paths[s]: load_image(ps[i], size)), "captions": caps[s]} for s in SPLITS}
