#!/usr/bin/env python3
"""Make the benchmark's harder image sets from the shared photos (generated, never committed):

- ``jpeg12mp/``: each photo upscaled to 4000x3000 (or 3000x4000) and saved as a quality-92 JPEG, the size
  and weight of a 12-megapixel phone photo;
- ``png/``: each photo re-encoded as PNG (lossless, slower to decode than JPEG).

Each folder gets a ``labels.csv`` in the shared format.

    python bench/make_image_sets.py ../shared/images/imagenet-samples build/images --count 40
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=40, help="photos per set (every k-th of the source)")
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.source / "labels.csv", newline="")))
    step = max(1, len(rows) // args.count)
    chosen = rows[::step][:args.count]
    for name, make in (("jpeg12mp", _jpeg12mp), ("png", _png)):
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "labels.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "class_index", "class_name"])
            for r in chosen:
                out_name = make(args.source / r["file"], folder)
                w.writerow([out_name, r["class_index"], r["class_name"]])
        print(f"{folder}: {len(chosen)} images")
    return 0


def _jpeg12mp(src: Path, folder: Path) -> str:
    img = Image.open(src).convert("RGB")
    size = (4000, 3000) if img.width >= img.height else (3000, 4000)
    name = src.stem + ".jpg"
    img.resize(size, Image.Resampling.BICUBIC).save(folder / name, quality=92)
    return name


def _png(src: Path, folder: Path) -> str:
    name = src.stem + ".png"
    Image.open(src).convert("RGB").save(folder / name)
    return name


if __name__ == "__main__":
    raise SystemExit(main())
