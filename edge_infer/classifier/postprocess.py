"""Logits -> softmax probabilities -> top-k predictions with labels."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def top_k(logits: np.ndarray, k: int, labels: Sequence[str]) -> list[list[dict[str, object]]]:
    """For each row, the ``k`` best classes, highest score first, as result-JSON prediction objects."""
    probs = softmax(np.asarray(logits, dtype=np.float32).reshape(len(logits), -1).copy())
    k = max(1, min(k, probs.shape[1]))
    # argpartition is O(n); only the k survivors are sorted.
    idx = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    rows = []
    for r in range(probs.shape[0]):
        order = idx[r][np.argsort(-probs[r, idx[r]], kind="stable")]
        rows.append([
            {"index": int(i), "label": labels[i] if i < len(labels) else str(i), "score": round(float(probs[r, i]), 6)}
            for i in order
        ])
    return rows
