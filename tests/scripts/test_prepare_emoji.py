"""scripts/prepare_emoji_captions.py on a small fake npm tarball: the pairs it
writes are read by the Karpathy data module (conf/data/emoji.yaml's reader)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from PIL import Image

from recur_attn.data.captions import KarpathyCaptionDataModule

from conftest import load_script


def _fake_tarball(path: Path, n: int = 10) -> None:
    meta = []
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for k in range(n):
            code = f"1f6{k:02x}"
            meta.append({"name": f"FACE NUMBER {k}", "short_names": [f"face_{k}", f"face-{k}"],
                         "image": f"{code}.png", "unified": code.upper(), "has_img_google": True,
                         "sort_order": k, "category": "Smileys"})
            buf = io.BytesIO()
            Image.new("RGBA", (64, 64), (20 * k, 0, 0, 255 if k % 2 else 0)).save(buf, format="PNG")
            add(f"package/img/google/64/{code}.png", buf.getvalue())
        meta.append({"name": "NO IMAGE", "short_names": [], "image": "ffff.png", "unified": "FFFF",
                     "has_img_google": False})
        add("package/emoji.json", json.dumps(meta).encode())


def test_prepare_emoji_writes_karpathy_pairs(tmp_path):
    mod = load_script("prepare_emoji_captions")
    tgz = tmp_path / "emoji-datasource-google-0.0.0.tgz"
    _fake_tarball(tgz)
    out = tmp_path / "emoji"
    assert mod.main(["--tarball", str(tgz), "--out", str(out), "--val", "0.2", "--test", "0.2"]) == 0
    data = json.loads((out / "dataset_emoji.json").read_text())
    assert len(data["images"]) == 10 and len(list((out / "images").glob("*.png"))) == 10
    first = data["images"][0]
    assert first["sentences"][0]["tokens"] == ["face", "number", "0"]
    assert [s["tokens"] for s in first["sentences"][1:]] == [["face", "0"]]  # duplicates merged
    assert sorted(e["split"] for e in data["images"]).count("val") == 2
    dm = KarpathyCaptionDataModule(str(out), json_name="dataset_emoji.json", image_dir="images", image_size=16,
                                   batch_size=4, min_count=1)
    dm.setup()
    assert len(dm.references("train")) == 6 and not dm.skipped
    assert next(iter(dm.train_dataloader()))["images"].shape == (4, 3, 16, 16)
