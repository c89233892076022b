#!/usr/bin/env python
"""Unpack the npm package ``emoji-datasource-google`` into image + caption pairs.

    python scripts/prepare_emoji_captions.py --out data/emoji
    python scripts/prepare_emoji_captions.py --out data/emoji --tarball emoji-datasource-google-16.0.0.tgz

Without ``--tarball`` it runs ``npm pack emoji-datasource-google@VERSION`` in a
temporary folder (npm's registry is the only network access). From the
tarball it takes ``package/emoji.json`` and the 64x64 PNGs under
``package/img/google/64/`` and writes, under ``--out``:

- ``images/<code>.png``: one image a base emoji (no skin-tone variants; 1,911
  in version 16.0.0);
- ``dataset_emoji.json`` in the Karpathy split format that
  :class:`recur_attn.data.captions.KarpathyCaptionDataModule` reads
  (``conf/data/emoji.yaml``): for each image the Unicode name as the first
  reference caption ("grinning face with smiling eyes") and its short names
  as further references ("smile"), and a split drawn once from ``--seed``
  (``--val`` / ``--test`` fractions, the rest train).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "emoji-datasource-google"
VERSION = "16.0.0"
IMG_PREFIX = "package/img/google/64/"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("_", " ").replace("-", " "))


def npm_pack(workdir: Path, version: str) -> Path:
    if shutil.which("npm") is None:
        raise SystemExit("npm is not installed (apt-get install npm), or pass --tarball")
    res = subprocess.run(["npm", "pack", f"{PACKAGE}@{version}"], cwd=workdir, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"npm pack {PACKAGE}@{version} failed:\n{res.stderr}")
    tgz = sorted(workdir.glob(f"{PACKAGE}-*.tgz"))
    if not tgz:
        raise SystemExit(f"npm pack wrote no {PACKAGE}-*.tgz in {workdir}")
    return tgz[-1]


def build(tarball: Path, out: Path, seed: int = 0, val: float = 0.1, test: float = 0.1) -> dict:
    """Write images/ and dataset_emoji.json under ``out``; returns counts."""
    with tarfile.open(tarball, "r:gz") as tar:
        try:
            meta = json.load(tar.extractfile("package/emoji.json"))
        except KeyError:
            raise SystemExit(f"{tarball}: no package/emoji.json (is it {PACKAGE}?)") from None
        members = {m.name: m for m in tar.getmembers() if m.name.startswith(IMG_PREFIX) and m.isfile()}
        entries = []
        (out / "images").mkdir(parents=True, exist_ok=True)
        missing = 0
        for e in sorted(meta, key=lambda e: e.get("sort_order", 0)):
            name = e.get("name") or ""
            member = members.get(IMG_PREFIX + e["image"])
            if not e.get("has_img_google") or member is None or not name:
                missing += 1
                continue
            (out / "images" / e["image"]).write_bytes(tar.extractfile(member).read())
            refs, seen = [], set()
            for text in [name, *e.get("short_names", [])]:
                toks = words(text)
                if toks and tuple(toks) not in seen:
                    seen.add(tuple(toks))
                    refs.append({"tokens": toks, "raw": text})
            entries.append({"filename": e["image"], "unified": e["unified"], "category": e.get("category"),
                            "sentences": refs})
    order = list(range(len(entries)))
    random.Random(seed).shuffle(order)
    n_val, n_test = round(val * len(entries)), round(test * len(entries))
    for rank, i in enumerate(order):
        entries[i]["split"] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    for k, e in enumerate(entries):
        e["imgid"] = k
    (out / "dataset_emoji.json").write_text(json.dumps({"dataset": "emoji", "source": tarball.name,
                                                        "images": entries}, indent=1))
    counts = {s: sum(e["split"] == s for e in entries) for s in ("train", "val", "test")}
    counts["skipped_without_image"] = missing
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data/emoji"))
    p.add_argument("--tarball", type=Path, default=None, help="an npm-packed .tgz (default: run npm pack)")
    p.add_argument("--version", default=VERSION)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", type=float, default=0.1)
    p.add_argument("--test", type=float, default=0.1)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tarball = args.tarball or npm_pack(Path(tmp), args.version)
        if not tarball.is_file():
            raise SystemExit(f"--tarball {tarball}: no such file")
        counts = build(tarball, args.out, args.seed, args.val, args.test)
    print(f"wrote {args.out / 'dataset_emoji.json'} and {args.out / 'images'}: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
