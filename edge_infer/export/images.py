"""Sample images for calibration and verification, prepared by the runtime's own preprocessing."""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..decoding.preprocess import PreprocessSpec, is_image_name, prepare
from ..errors import ExportError, InputError
from ..tools.progress import Progress

log = logging.getLogger(__name__)


@dataclass
class ImageSet:
    """Prepared images (N, 3, H, W), their file names, and the files that could not be read."""

    tensors: np.ndarray
    names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ExportError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p.name))
    if not files:
        raise ExportError(f"image folder {folder} holds no images (.jpg, .png, ...)")
    return files


def split(files: list[Path], calib_every: int) -> tuple[list[Path], list[Path]]:
    """Every ``calib_every``-th file calibrates; the rest verify, so no image does both."""
    if calib_every < 2:
        raise ExportError(f"--calib-every must be >= 2 so that some images are left to verify, got {calib_every}")
    calib = [f for i, f in enumerate(files) if i % calib_every == 0]
    verify = [f for i, f in enumerate(files) if i % calib_every != 0]
    return calib, verify


def load_images(files: list[Path], spec: PreprocessSpec, label: str) -> ImageSet:
    """Prepare each file; broken ones are skipped with a warning and counted, never fatal one by one."""
    tensors, names, skipped = [], [], []
    for f in Progress(files, label):
        try:
            tensors.append(prepare(f, spec).tensor)
            names.append(f.name)
        except InputError as e:
            log.warning("%s: skipping %s: %s (%s)", label, f, e.message, e.kind)
            skipped.append((str(f), f"{e.kind}: {e.message}"))
    if not tensors:
        raise ExportError(f"{label}: none of the {len(files)} images could be read")
    return ImageSet(np.stack(tensors), names, skipped)


def read_labels_csv(path: Path) -> dict[str, int]:
    """``file,class_index[,class_name]`` rows -> {file name: class index}."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ExportError(f"labels CSV {path}: {e.strerror or e}") from e
    if not rows or not {"file", "class_index"} <= set(rows[0]):
        raise ExportError(f"labels CSV {path}: needs a header with 'file' and 'class_index' columns")
    try:
        return {Path(r["file"]).name: int(r["class_index"]) for r in rows}
    except (TypeError, ValueError) as e:
        raise ExportError(f"labels CSV {path}: bad class_index: {e}") from e


def read_label_names(path: Path) -> list[str]:
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise ExportError(f"labels file {path}: {e.strerror or e}") from e
    if not names:
        raise ExportError(f"labels file {path} is empty")
    return names
