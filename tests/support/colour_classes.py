"""A tiny generated folder-per-class dataset: JPEGs of smooth noise around a colour per class."""
from __future__ import annotations

from pathlib import Path

import numpy as np

COLOURS = {"red": (200, 40, 40), "green": (40, 190, 40), "blue": (40, 40, 200)}


def write_class(folder: Path, colour: tuple[int, int, int], n: int, seed: int) -> None:
    """``n`` JPEGs of smooth noise around ``colour``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        noise = rng.integers(-40, 40, size=(6, 8, 3))
        small = (np.array(colour) + noise).clip(0, 255).astype(np.uint8)
        Image.fromarray(small, "RGB").resize((320, 240), Image.Resampling.BICUBIC).save(
            folder / f"{i:02d}.jpg")
