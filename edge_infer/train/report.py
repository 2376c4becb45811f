"""Held-out metrics (confusion matrix, per-class recall, top-1) and the closing report's text."""
from __future__ import annotations

import numpy as np


def confusion(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Rows: the true class; columns: the predicted one."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (truth, pred), 1)
    return m


def recall(matrix: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    """Per class: share of its held-out images predicted right (None for a class with none held out)."""
    rows = matrix.sum(1)
    return {c: (round(float(matrix[i, i] / rows[i]), 4) if rows[i] else None) for i, c in enumerate(classes)}


def recall_table(classes: list[str], counts: dict[str, dict[str, int]],
                 fp32: dict[str, float | None] | None, int8: dict[str, float | None]) -> str:
    """Per class: images trained on, held out, skipped, and recall (fp32 only when there is an fp32 model)."""
    pct = lambda r: "-" if r is None else f"{100 * r:.1f}%"  # noqa: E731
    w = max(len("class"), *(len(c) for c in classes))
    fp = f"  {'fp32':>7}" if fp32 is not None else ""
    lines = [f"{'class':<{w}}  {'train':>5}  {'held':>5}  {'skip':>5}{fp}  {'int8':>7}"]
    for c in classes:
        n = counts[c]
        fp = f"  {pct(fp32[c]):>7}" if fp32 is not None else ""
        lines.append(f"{c:<{w}}  {n['train']:>5}  {n['held_out']:>5}  {n['skipped']:>5}{fp}  {pct(int8[c]):>7}")
    return "\n".join(lines)


def confusion_text(matrix: np.ndarray, classes: list[str]) -> str:
    """The matrix with class names on the rows and column numbers (1..n) keyed by the row names."""
    w = max(len(c) for c in classes) + 4
    cell = max(3, len(str(int(matrix.max(initial=0)))) + 1)
    head = " " * w + "".join(f"{j + 1:>{cell}}" for j in range(len(classes)))
    rows = [f"{f'{i + 1} {c}':<{w}}" + "".join(f"{int(v):>{cell}}" for v in matrix[i]) for i, c in enumerate(classes)]
    return "\n".join(["true \\ predicted (column k = class k)", head, *rows])
