"""A replacement model's self-test: run it on the photos shipped in ``models/selftest/`` before it serves.

A model that loads can still be the wrong file, a broken re-export or one quantized badly enough to be
useless, and a daemon in a field cabinet has nobody watching when it swaps. So before a reload swaps a
model in, it must classify the embedded photos: finite scores of the right shape always, and, when it
names the same classes as the model it replaces, the right class for all but at most one of them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError
from .preprocess import prepare
from .session import ModelSession

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "models" / "selftest"
ALLOWED_MISSES = 1


def load_expected(folder: Path = SAMPLES_DIR) -> dict[str, int]:
    """Sample file name -> the ImageNet-1k class it shows."""
    with open(folder / "expected.json", encoding="utf-8") as f:
        return {str(k): int(v) for k, v in json.load(f)["top1"].items()}


def self_test(candidate: ModelSession, serving: ModelSession, folder: Path = SAMPLES_DIR) -> str:
    """Raise ``ModelError`` saying why ``candidate`` must not replace ``serving``; else a one-line summary."""
    if candidate.manifest.preprocess != serving.manifest.preprocess:
        # Workers and the tensor pool are built for the serving model's crop; changing that needs a restart.
        raise ModelError(f"its preprocessing {candidate.manifest.preprocess} differs from the serving model's "
                         f"{serving.manifest.preprocess}; restart the daemon to change it")
    expected = load_expected(folder)
    try:
        batch = np.stack([prepare(folder / name, candidate.manifest.preprocess).tensor for name in expected])
    except InputError as e:
        raise ModelError(f"cannot read the self-test photos in {folder}: {e}") from e
    try:
        logits = candidate.run(batch)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises untyped errors for models that fail at run time
        raise ModelError(f"it fails to run: {e}") from e
    n_labels = len(candidate.manifest.labels)
    if logits.shape != (len(expected), n_labels):
        raise ModelError(f"its output has shape {logits.shape}, expected {(len(expected), n_labels)} "
                         f"(one score per label in its manifest)")
    if not np.isfinite(logits).all():
        raise ModelError("its output holds NaN or infinite values")
    top1 = logits.argmax(axis=1)
    if candidate.manifest.labels != serving.manifest.labels:
        return f"runs on {len(expected)} photos; a different label set, so only its output was checked"
    wrong = [f"{name} (expected {want}, got {int(got)})"
             for (name, want), got in zip(expected.items(), top1) if int(got) != want]
    if len(wrong) > ALLOWED_MISSES:
        raise ModelError(f"it misclassifies {len(wrong)} of {len(expected)} self-test photos: {', '.join(wrong)}")
    return f"top-1 right on {len(expected) - len(wrong)} of {len(expected)} self-test photos"
