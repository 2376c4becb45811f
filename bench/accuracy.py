#!/usr/bin/env python3
"""Top-1 of several models on the export's held-out photos, side by side, on this CPU.

Run it natively, and under `qemu-x86_64 -cpu Haswell` to see what an x86 CPU without VNNI computes
(onnxruntime then takes its AVX2 u8s8 kernels, whose int16 pair sums saturate): bench/accuracy_no_vnni.sh.

    python bench/accuracy.py --images ../shared/images/imagenet-samples \
        --model int8=edge_infer/models/model.onnx --model fp32=build/model/fp32/model.onnx \
        --model zoo-int8=../shared/models/onnx-zoo-mobilenetv2-12-int8.onnx

``--variants 4`` evaluates instead on 4 deterministic variants of every photo (mirror, off-centre crop,
slight rotation, half size re-encoded as a quality-40 JPEG): 800 images from the 200 photos, none of them
an image the export calibrated on (``--exclude-calibration`` also drops the calibration photos' variants:
600). The variants are made in memory and prepared by the runtime's own preprocessing.
"""
from __future__ import annotations

import argparse
import io
import platform
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_infer.classifier.session import make_ort_session  # noqa: E402
from edge_infer.decoding.preprocess import PreprocessSpec, prepare  # noqa: E402
from edge_infer.export.images import ImageSet, list_images, load_images, read_labels_csv, split  # noqa: E402

VARIANTS = ("mirror", "crop", "rotate", "small-jpeg")


def variant(img: Image.Image, kind: str, i: int) -> bytes:
    """One deterministic variant of photo number ``i``, as JPEG bytes (what a camera would hand over)."""
    w, h = img.size
    quality = 90
    if kind == "mirror":
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    elif kind == "crop":  # 80% of each side, towards one of the four corners in turn
        cw, ch = int(w * 0.8), int(h * 0.8)
        x, y = [(0, 0), (w - cw, 0), (0, h - ch), (w - cw, h - ch)][i % 4]
        img = img.crop((x, y, x + cw, y + ch))
    elif kind == "rotate":  # +-6 degrees, then the centre 85% so that no black corners remain
        img = img.rotate(6 if i % 2 else -6, resample=Image.Resampling.BILINEAR)
        img = img.crop((int(w * 0.075), int(h * 0.075), int(w * 0.925), int(h * 0.925)))
    elif kind == "small-jpeg":
        img = img.resize((w // 2, h // 2), Image.Resampling.BILINEAR)
        quality = 40
    else:
        raise ValueError(kind)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def load_variants(files: list[Path], count: int, spec: PreprocessSpec) -> ImageSet:
    tensors, names = [], []
    for i, f in enumerate(files):
        img = Image.open(f).convert("RGB")
        for kind in VARIANTS[:count]:
            tensors.append(prepare(variant(img, kind, i), spec).tensor)
            names.append(f.name)
    return ImageSet(np.stack(tensors), names)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--labels-csv", type=Path, help="default: labels.csv in --images")
    ap.add_argument("--calib-every", type=int, default=4, help="as given to export: these images are left out")
    ap.add_argument("--variants", type=int, default=0, choices=range(len(VARIANTS) + 1),
                    help="evaluate on this many variants of every photo instead (4: 800 images from 200)")
    ap.add_argument("--exclude-calibration", action="store_true",
                    help="with --variants: leave out the calibration photos' variants too")
    ap.add_argument("--limit", type=int, help="only the first N images (emulation is slow)")
    ap.add_argument("--save-logits", type=Path, metavar="DIR", help="write DIR/NAME.npy for each model")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    args = ap.parse_args()
    truth = read_labels_csv(args.labels_csv or args.images / "labels.csv")
    files = list_images(args.images)
    _, held_out = split(files, args.calib_every)
    if args.variants:
        images = load_variants(held_out if args.exclude_calibration else files, args.variants, PreprocessSpec())
        what = f"variants ({', '.join(VARIANTS[:args.variants])}) of photos never used to calibrate"
    else:
        images = load_images(held_out, PreprocessSpec(), "preparing")
        what = "held-out photos"
    if args.limit:
        images = ImageSet(images.tensors[:args.limit], images.names[:args.limit])
    y = np.array([truth[n] for n in images.names])
    first = None
    print(f"machine {platform.machine()}, {len(y)} {what}")
    print(f"{'model':<12} {'top-1':>7} {'agreement with ' + args.model[0].split('=')[0]:>28}")
    for spec in args.model:
        name, _, path = spec.partition("=")
        s = make_ort_session(path)
        logits = np.concatenate([s.run(None, {s.get_inputs()[0].name: images.tensors[i:i + 1]})[0].reshape(1, -1)
                                 for i in range(len(y))])
        if args.save_logits:
            args.save_logits.mkdir(parents=True, exist_ok=True)
            np.save(args.save_logits / f"{name}.npy", logits)
        pred = logits.argmax(1)
        first = pred if first is None else first
        print(f"{name:<12} {100 * (pred == y).mean():>6.2f}% {100 * (pred == first).mean():>27.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
