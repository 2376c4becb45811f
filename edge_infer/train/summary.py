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
            lines.append(f"{self.folds['k']}-fold cross-validation over all {self.folds['images']} images: "
                         f"top-1 {100 * self.folds['top1']:.1f}%, mean per-class recall "
                         f"{100 * self.folds['mean_recall']:.1f}%")
        lines.append(f"trained in {self.seconds:.0f} s; confusion matrix: {self.out / 'confusion.png'}")
        return "\n".join(lines)


def cross_validate(feats, kind: str, similarity: np.ndarray, k: int, seed: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Each image held out once (``k`` stratified folds): the chosen head's kind refitted per fold."""
    from .head import mean_recall
    from .runtime import choose_head

    names, n = feats.classes, len(feats.classes)
    idx = {c: [i for i, lab in enumerate(feats.labels) if lab == j] for j, c in enumerate(names)}
    fold_of = np.zeros(len(feats.labels), dtype=np.int64)
    rng = np.random.default_rng(seed)
    offset = 0
    for c in names:  # round-robin within each class, continuing across classes: folds stay balanced
        order = rng.permutation(idx[c])
        fold_of[order] = (np.arange(len(order)) + offset) % k
        offset += len(order)
    pred = np.zeros(len(feats.labels), dtype=np.int64)
    for f in range(k):
        train = {c: [i for i in idx[c] if fold_of[i] != f] for c in names}
        test = [i for i in range(len(feats.labels)) if fold_of[i] == f]
        if not test:
            continue
        head, _ = choose_head(feats, train, similarity, seed, kind=kind)
        pred[test] = head.scores(*feats.arrays(test, 1)[:2]).argmax(1)
    y = np.array(feats.labels)
    return {"k": k, "images": len(y), "top1": round(float((pred == y).mean()), 4),
            "mean_recall": round(mean_recall(pred, y, n), 4)}



