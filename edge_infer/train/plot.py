"""The confusion matrix as a PNG heat map, drawn with Pillow (no plotting library on a device)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 56
PAD = 12


def _font(size: int):  # type: ignore[no-untyped-def]
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def confusion_png(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Rows true, columns predicted; each cell's colour is its share of the row, its number the count."""
    n = len(classes)
    font, small = _font(16), _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(c, font=font)) for c in classes) + PAD
    top = 40 + label_w  # column labels are drawn rotated, as tall as the longest name
    left = label_w + 30
    size = (left + n * CELL + PAD, top + n * CELL + 40)
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.text((PAD, 8), title, fill="black", font=font)
    rows = matrix.sum(1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    for i in range(n):
        d.text((left - 10, top + i * CELL + CELL // 2), classes[i], fill="black", font=font, anchor="rm")
        for j in range(n):
            x, y = left + j * CELL, top + i * CELL
            s = float(share[i, j])
            # White -> dark blue by share of the true class; the diagonal is what should be dark.
            colour = (int(255 - 225 * s), int(255 - 180 * s), int(255 - 60 * s))
            d.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=colour, outline=(200, 200, 200))
            d.text((x + CELL // 2, y + CELL // 2), str(int(matrix[i, j])), font=font, anchor="mm",
                   fill="white" if s > 0.5 else "black")
    for j, c in enumerate(classes):
        w = int(probe.textlength(c, font=font)) + 4
        label = Image.new("RGBA", (w, 22), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((0, 2), c, fill="black", font=font)
        rotated = label.rotate(90, expand=True)
        img.paste(rotated, (left + j * CELL + CELL // 2 - 11, top - 8 - rotated.height), rotated)
    d.text((left, top + n * CELL + 10), "predicted ->", fill="black", font=small)
    d.text((PAD, top - 20), "true", fill="black", font=small)
    img.save(path)
