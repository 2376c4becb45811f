"""``OUT/selftest/``: held-out photos the trained model gets right, so a daemon can self-test it before a swap.

Same format as the package's ``models/selftest/`` (``expected.json``: ``{"top1": {file: class index}}``).
Photos the int8 model classifies right are taken first, round-robin over the classes so each class is
represented where it can be; the self-test allows one miss, so at most one photo it gets wrong is added,
for a class it gets none right.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

SELFTEST_DIR = "selftest"
MAX_PHOTOS = 16


def pick(truth: np.ndarray, pred: np.ndarray, max_photos: int = MAX_PHOTOS) -> list[int]:
    """Indices into the held-out images, at most ``max_photos``."""
    classes = sorted(set(truth.tolist()))
    right = {c: [i for i in range(len(truth)) if truth[i] == c and pred[i] == c] for c in classes}
    chosen: list[int] = []
    misses_allowed = 1
    for c in classes:  # one wrong photo at most, for a class with no right one
        if not right[c] and misses_allowed:
            chosen.append(next(i for i in range(len(truth)) if truth[i] == c))
            misses_allowed -= 1
    rank = 0
    while len(chosen) < max_photos and any(rank < len(v) for v in right.values()):
        for c in classes:
            if rank < len(right[c]) and len(chosen) < max_photos:
                chosen.append(right[c][rank])
        rank += 1
    return sorted(chosen)


def write_selftest(out: Path, files: list[Path], truth: np.ndarray, classes: list[str], chosen: list[int]) -> Path:
    folder = out / SELFTEST_DIR
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    expected: dict[str, int] = {}
    seen: dict[int, int] = {}
    for i in chosen:
        c = int(truth[i])
        seen[c] = seen.get(c, 0) + 1
        name = f"{classes[c]}__{seen[c]}{files[i].suffix.lower()}"
        shutil.copyfile(files[i], folder / name)
        expected[name] = c
    about = ("held-out photos of the training data, by class index of this model's labels; "
             "the reload self-test runs the model on them before it serves")
    (folder / "expected.json").write_text(json.dumps({"about": about, "top1": expected}, indent=2) + "\n",
                                          encoding="utf-8")
    return folder
