"""The ImageFolder layout: one sub-folder per class, class names the sorted folder names; or a camera's
samples layout (``<samples_dir>/<region>/<state>/``, every folder a region of state folders): the states.

Each readable image is decoded once, safely (the runtime's own decoder), into a square uint8 crop of the
resize size (256 x 256): augmentation crops from it, and its centre 224 x 224 is exactly what the runtime
sees. Unreadable files are skipped and counted per class; a class left with none is an error naming it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..decoding.preprocess import PreprocessSpec, crop_pixels, is_image_name
from ..errors import ExportError, InputError
from ..tools.progress import Progress

log = logging.getLogger(__name__)
MIN_CLASSES = 2


@dataclass
class ClassImages:
    name: str
    files: list[Path]  # readable ones, sorted
    pixels: list[np.ndarray]  # (resize, resize, 3) uint8, one per file
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)


def find_classes(data: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (recursive, sorted); the errors name the folder and what is wrong."""
    if not data.is_dir():
        raise ExportError(f"--data {data}: no such folder")
    folders = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ExportError(f"--data {data} is empty: expected one sub-folder of images per class "
                          f"(e.g. {data}/cat/*.jpg, {data}/dog/*.jpg)")
    if all(_is_region(f) for f in folders):
        classes = _states(folders)  # <samples_dir>/<region>/<state>/: a state's crops of every region
    else:
        classes = {f.name: sorted(p for p in f.rglob("*") if p.is_file() and is_image_name(p.name))
                   for f in folders}
    if len(classes) < MIN_CLASSES:
        raise ExportError(f"--data {data} has {len(classes)} class folder ({', '.join(classes)}); "
                          f"training needs at least {MIN_CLASSES}")
    empty = [name for name, files in classes.items() if not files]
    if empty:
        raise ExportError(f"--data {data}: class folder(s) {', '.join(empty)} hold no images (.jpg, .png, ...)")
    return classes


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_region(folder: Path) -> bool:
    """A camera's samples region: state sub-folders of images and no image of its own."""
    return bool(_subfolders(folder)) and not any(p.is_file() and is_image_name(p.name)
                                                 for p in folder.iterdir())


def _states(regions: list[Path]) -> dict[str, list[Path]]:
    states: dict[str, list[Path]] = {}
    for region in regions:
        for state in _subfolders(region):
            states.setdefault(state.name, []).extend(
                p for p in state.rglob("*") if p.is_file() and is_image_name(p.name))
    return {name: sorted(files) for name, files in sorted(states.items())}


def square_spec(spec: PreprocessSpec) -> PreprocessSpec:
    """The spec whose crop is the whole resized short side: the room augmentation crops in."""
    return PreprocessSpec(resize=spec.resize, crop=spec.resize, interpolation=spec.interpolation,
                          mean=spec.mean, std=spec.std)


def load_classes(data: Path, spec: PreprocessSpec) -> list[ClassImages]:
    classes = find_classes(data)
    square = square_spec(spec)
    total = sum(len(f) for f in classes.values())
    progress = Progress(range(total), "decoding images")
    out = []
    for name, files in classes.items():
        c = ClassImages(name, [], [])
        for f in files:
            try:
                c.pixels.append(crop_pixels(f, square).tensor)
                c.files.append(f)
            except InputError as e:
                log.warning("class %s: skipping %s: %s (%s)", name, f, e.message, e.kind)
                c.skipped.append((str(f), f"{e.kind}: {e.message}"))
            progress.advance()
        out.append(c)
    progress.close()
    unreadable = [c for c in out if not c.files]
    if unreadable:
        c = unreadable[0]
        raise ExportError(f"class {c.name!r} has no readable images: all {len(c.skipped)} of its files were "
                          f"skipped (e.g. {c.skipped[0][0]}: {c.skipped[0][1]})")
    return out


def centre(pixels: np.ndarray, crop: int) -> np.ndarray:
    """The runtime's centre crop of a square ``pixels`` (the same pixels ``prepare`` gives)."""
    off = (pixels.shape[0] - crop) // 2
    return pixels[off:off + crop, off:off + crop]
