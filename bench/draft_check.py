#!/usr/bin/env python3
"""JPEG draft decoding vs full decoding on the same photos: top-1 agreement and CPU time per image.

    python bench/draft_check.py build/images/jpeg12mp
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_infer.classifier.session import ModelSession  # noqa: E402
from edge_infer.decoding.preprocess import is_image_name, prepare  # noqa: E402
from edge_infer.export.images import read_labels_csv  # noqa: E402


def main() -> int:
    folder = Path(sys.argv[1])
    files = sorted(p for p in folder.iterdir() if is_image_name(p.name))
    truth = read_labels_csv(folder / "labels.csv") if (folder / "labels.csv").exists() else {}
    session = ModelSession.load()
    spec = session.manifest.preprocess
    top1: dict[bool, list[int]] = {}
    cpu: dict[bool, float] = {True: float("inf"), False: float("inf")}
    for rnd in range(2):  # interleaved: full, draft, full, draft; best round of each
        for draft in (False, True):
            c0 = time.process_time()
            batch = np.stack([prepare(p, spec, draft=draft).tensor for p in files])
            cpu[draft] = min(cpu[draft], (time.process_time() - c0) / len(files))
            top1[draft] = list(session.run(batch).argmax(1))
    same = sum(a == b for a, b in zip(top1[False], top1[True]))
    print(f"{len(files)} images in {folder}")
    print(f"preprocessing CPU ms/img: full decode {1000 * cpu[False]:.1f}, draft {1000 * cpu[True]:.1f} "
          f"({cpu[False] / cpu[True]:.1f}x less)")
    print(f"top-1 identical on {same}/{len(files)}")
    if truth:
        for draft in (False, True):
            hits = sum(int(t) == truth[p.name] for t, p in zip(top1[draft], files))
            print(f"top-1 accuracy, {'draft' if draft else 'full decode'}: {hits}/{len(files)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
