"""Real image files for the tests to drop into inboxes."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_images(folder: Path, n: int, size: tuple[int, int] = (320, 240), seed: int = 0,
                 fmt: str = "jpg") -> list[Path]:
    """``n`` real image files (JPEG, or PNG: slower to decode, never draft-decoded) with smooth random content."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
        p = folder / f"img_{i:03d}.{fmt}"
        img.save(p, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(p)
    return paths
