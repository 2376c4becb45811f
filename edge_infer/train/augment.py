"""Training views: random resized crop (scale and aspect jitter) and horizontal flip, deterministic by seed.

The view count is fixed (``views`` per image, the first the plain centre crop) because the frozen layers'
output is computed once per view and cached: a new random crop every epoch would mean running the whole
network every epoch, which on two cores is what costs the most.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..decoding.preprocess import INTERPOLATIONS, PreprocessSpec, normalise
from .dataset import centre

MIN_SCALE = 0.35  # of the square's area; smaller crops often lose the object on photos this size
ASPECT = (3 / 4, 4 / 3)


def view(pixels: np.ndarray, spec: PreprocessSpec, rng: np.random.Generator) -> np.ndarray:
    """One random view of a square uint8 crop -> CHW float32, normalised like the runtime."""
    size = pixels.shape[0]
    area = size * size * rng.uniform(MIN_SCALE, 1.0)
    aspect = np.exp(rng.uniform(np.log(ASPECT[0]), np.log(ASPECT[1])))
    w = int(min(size, round(np.sqrt(area * aspect))))
    h = int(min(size, round(np.sqrt(area / aspect))))
    x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    img = Image.fromarray(pixels).resize((spec.crop, spec.crop), INTERPOLATIONS[spec.interpolation],
                                         box=(x, y, x + w, y + h))
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return normalise(img, spec)


def views(pixels: np.ndarray, spec: PreprocessSpec, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` views of one image: the runtime's centre crop first, then ``n - 1`` random ones."""
    return [normalise(centre(pixels, spec.crop), spec)] + [view(pixels, spec, rng) for _ in range(n - 1)]
