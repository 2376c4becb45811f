#!/usr/bin/env python3
"""Top-1 of several models on the export's held-out photos, side by side, on this CPU.

Run it natively, and under `qemu-x86_64 -cpu Haswell` to see what an x86 CPU without VNNI computes
(onnxruntime then takes its AVX2 u8s8 kernels, whose int16 pair sums saturate): bench/accuracy_no_vnni.sh.

    python bench/accuracy.py --images ../shared/images/imagenet-samples \
        --model int8=edge_infer/models/model.onnx --model fp32=build/model/fp32/model.onnx \
        --model zoo-int8=../shared/models/onnx-zoo-mobilenetv2-12-int8.onnx
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_infer.export.images import list_images, load_images, read_labels_csv, split  # noqa: E402
from edge_infer.model.preprocess import PreprocessSpec  # noqa: E402
from edge_infer.model.session import make_ort_session  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--labels-csv", type=Path, help="default: labels.csv in --images")
    ap.add_argument("--calib-every", type=int, default=4, help="as given to export: these images are left out")
    ap.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    args = ap.parse_args()
    truth = read_labels_csv(args.labels_csv or args.images / "labels.csv")
    _, held_out = split(list_images(args.images), args.calib_every)
    images = load_images(held_out, PreprocessSpec(), "preparing")
    y = np.array([truth[n] for n in images.names])
    first = None
    print(f"machine {platform.machine()}, {len(y)} held-out photos")
    print(f"{'model':<12} {'top-1':>7} {'agreement with ' + args.model[0].split('=')[0]:>28}")
    for spec in args.model:
        name, _, path = spec.partition("=")
        s = make_ort_session(path)
        pred = np.concatenate([s.run(None, {s.get_inputs()[0].name: images.tensors[i:i + 1]})[0].reshape(1, -1)
                               for i in range(len(y))]).argmax(1)
        first = pred if first is None else first
        print(f"{name:<12} {100 * (pred == y).mean():>6.1f}% {100 * (pred == first).mean():>27.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
