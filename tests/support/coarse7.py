"""The 7-group training set: each shared ImageNet photo copied into the folder of its class's coarse group.

``../shared/images/imagenet-samples/labels.csv`` gives each photo's ImageNet class (``file,class_index,...``);
``../shared/labels/imagenet_coarse7.csv`` maps every class to a group (``class_index,group,class_name``).
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path


def coarse7_groups(shared: Path) -> dict[int, str]:
    with open(shared / "labels" / "imagenet_coarse7.csv", newline="", encoding="utf-8") as f:
        return {int(r["class_index"]): r["group"] for r in csv.DictReader(f)}


def build_coarse7(shared: Path, dest: Path) -> dict[str, int]:
    """Fill ``dest/<group>/`` with the shared photos; returns photos per group."""
    groups = coarse7_groups(shared)
    samples = shared / "images" / "imagenet-samples"
    counts: dict[str, int] = {}
    with open(samples / "labels.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            group = groups[int(row["class_index"])]
            (dest / group).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(samples / row["file"], dest / group / row["file"])
            counts[group] = counts.get(group, 0) + 1
    return counts
