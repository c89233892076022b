#!/usr/bin/env python
"""Write English -> Spanish Bible verse pairs with a fixed train/val/test split.

English: the World English Bible (SWORD module engWEB2015eb, Debian package
sword-text-web); Spanish: the Reina-Valera 1909 (spaRV1909eb,
sword-text-sparv); read with ``diatheke`` (Debian package diatheke)::

    apt-get install -y diatheke sword-text-web sword-text-sparv
    python scripts/prepare_bible_pairs.py --out data/bible_en_es

Verses are paired by reference (book, chapter, verse); verses present in one
translation only (the WEB's deuterocanon, versification differences) are
dropped, and so are empty verses and verses longer than ``--max-chars``
(the WEB's last verse carries its glossary). Markup is removed (the WEB's
word tags, titles, notes). The split is by a hash of the reference, so it is
fixed whatever the order of the verses: about 1 % val, 2 % test.

Writes ``train.tsv``, ``val.tsv``, ``test.tsv`` (``english<TAB>spanish``),
the same files' references as ``*.refs``, and ``README.txt``.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

MODULES = {"en": "engWEB2015eb", "es": "spaRV1909eb"}
# a verse starts with its reference, at the line's start or right after a tag (diatheke
# repeats the last heading, e.g. a psalm's title, in front of the following lines)
REF = re.compile(r"^(?:.*?>)??\s*((?:I{1,3} )?[A-Z][A-Za-z]*(?: (?:of )?[A-Z][A-Za-z]*)*"
                 r"(?: \([A-Za-z]+\))?) (\d+):(\d+): ")


def run_diatheke(module: str, key: str = "Gen 1:1-Rev 22:21") -> str:
    exe = shutil.which("diatheke")
    if exe is None:
        sys.exit("diatheke not found: apt-get install -y diatheke sword-text-web sword-text-sparv")
    res = subprocess.run([exe, "-b", module, "-k", key], capture_output=True, text=True)
    if res.returncode != 0 or not res.stdout.strip() or res.stdout.strip().startswith("("):
        sys.exit(f"diatheke could not read module {module} ({res.stderr.strip()[:200]}); "
                 f"is its Debian package installed? (sword-text-web / sword-text-sparv)")
    return res.stdout


def clean(text: str) -> str:
    """SWORD's internal markup -> plain text."""
    text = re.sub(r"<title\b[^>]*>.*?</title>", " ", text, flags=re.S)
    text = re.sub(r"<note\b[^>]*>.*?</note>", " ", text, flags=re.S)
    # adjacent word / quote tags are separate words ("God</w><w>created", "born</q><q><w>Son")
    text = re.sub(r"</(w|q)>(?=<(?:w|q)\b)", r"</\1> ", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = html.unescape(text)
    return re.sub(r"\s+", " ", text).strip()


def parse_verses(raw: str) -> dict[tuple[str, int, int], str]:
    """diatheke's output ("Book C:V: text", continuation lines) -> {(book, c, v): text}."""
    verses: dict[tuple[str, int, int], list[str]] = {}
    current = None
    for line in raw.splitlines():
        if re.fullmatch(r"\s*\([A-Za-z0-9]+\)\s*", line):  # the trailing "(module)" line
            continue
        m = REF.match(line)
        if m:
            current = (m.group(1), int(m.group(2)), int(m.group(3)))
            verses.setdefault(current, []).append(line[m.end():])
        elif current is not None:
            verses[current].append(line)
    return {k: clean(" ".join(v)) for k, v in verses.items()}


def split_of(ref: tuple[str, int, int], val_pct: float, test_pct: float) -> str:
    h = int(hashlib.sha1(f"{ref[0]} {ref[1]}:{ref[2]}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 100
    if h < val_pct:
        return "val"
    if h < val_pct + test_pct:
        return "test"
    return "train"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="data/bible_en_es", help="output folder (default: data/bible_en_es)")
    ap.add_argument("--max-chars", type=int, default=600, help="drop verses longer than this on either side")
    ap.add_argument("--val-pct", type=float, default=1.0)
    ap.add_argument("--test-pct", type=float, default=2.0)
    args = ap.parse_args(argv)

    en = parse_verses(run_diatheke(MODULES["en"]))
    es = parse_verses(run_diatheke(MODULES["es"]))
    common = [r for r in en if r in es]
    splits: dict[str, list[tuple[tuple[str, int, int], str, str]]] = {"train": [], "val": [], "test": []}
    dropped = 0
    for ref in common:
        e, s = en[ref], es[ref]
        if not e or not s or len(e) > args.max_chars or len(s) > args.max_chars or "\t" in e + s:
            dropped += 1
            continue
        splits[split_of(ref, args.val_pct, args.test_pct)].append((ref, e, s))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(out / f"{name}.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{e}\t{s}\n" for _, e, s in rows)
        with open(out / f"{name}.refs", "w", encoding="utf-8") as f:
            f.writelines(f"{r[0]} {r[1]}:{r[2]}\n" for r, _, _ in rows)
    summary = (f"English (World English Bible, {MODULES['en']}) -> Spanish (Reina-Valera 1909, {MODULES['es']}) "
               f"verse pairs made by scripts/prepare_bible_pairs.py with diatheke.\n"
               f"verses: {len(en)} en, {len(es)} es, {len(common)} in both, {dropped} dropped\n"
               + "".join(f"{k}: {len(v)} pairs\n" for k, v in splits.items()))
    (out / "README.txt").write_text(summary, encoding="utf-8")
    print(summary, end="")


if __name__ == "__main__":
    main()
