"""The runtime training's closing report, and k-fold cross-validation for small sets."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .report import confusion_text, recall_table

NOISE_BELOW = 100  # held-out images: under this, 2 points of top-1 are one or two photos


@dataclass
class RuntimeReport:
    out: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]
    recall: dict[str, dict[str, float | None]]
    matrix: np.ndarray
    int8_top1: float
    agreement: float
    head: dict[str, Any]
    folds: dict[str, Any] | None
    seconds: float

    def text(self) -> str:
        held = int(self.matrix.sum())
        lines = [recall_table(self.classes, self.counts, None, self.recall["int8"]), "",
                 confusion_text(self.matrix, self.classes), "",
                 f"held-out top-1: int8 {100 * self.int8_top1:.1f}% on {held} images "
                 f"(head: {self.head['kind']}); the served graph agrees with the trained head on "
                 f"{100 * self.agreement:.1f}%"]
        if held < NOISE_BELOW:
            lines.append(f"note: {held} held-out images: a difference of 2 points is noise here "
                         "(try --folds 5)")
        if self.folds:
            lines.append(f"{self.folds['k']}-fold cross-validation over all "
                         f"{self.folds['images']} images: top-1 {100 * self.folds['top1']:.1f}%, "
                         "mean per-class recall "
                         f"{100 * self.folds['mean_recall']:.1f}%")
        lines.append(f"trained in {self.seconds:.0f} s; "
                     f"confusion matrix: {self.out / 'confusion.png'}")
        return "\n".join(lines)
