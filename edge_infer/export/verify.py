"""Verification: does the int8 model agree with fp32, and how accurate are both, on unseen images?"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..classifier.session import make_ort_session
from ..tools.progress import Progress
from .images import ImageSet
from .onnx_export import INPUT_NAME, OUTPUT_NAME


@dataclass(frozen=True)
class Verification:
    images: int
    agreement_top1: float  # share of images where int8's top-1 equals fp32's
    fp32_top1: float | None  # accuracy against the labels CSV, when given
    int8_top1: float | None
    labelled: int  # images that had a label in the CSV
    skipped: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def logits(model: Path, images: ImageSet, label: str, batch: int = 16) -> np.ndarray:
    session = make_ort_session(model)
    chunks = range(0, len(images), batch)
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: images.tensors[i:i + batch]})[0] for i in Progress(chunks, label)]
    return np.concatenate(out).reshape(len(images), -1)


def verify(fp32: Path, int8: Path, images: ImageSet, truth: dict[str, int] | None) -> Verification:
    f = logits(fp32, images, "verify fp32").argmax(1)
    q = logits(int8, images, "verify int8").argmax(1)
    fp32_top1 = int8_top1 = None
    labelled = 0
    if truth is not None:
        idx = [i for i, n in enumerate(images.names) if n in truth]
        labelled = len(idx)
        if idx:
            y = np.array([truth[images.names[i]] for i in idx])
            fp32_top1 = float((f[idx] == y).mean())
            int8_top1 = float((q[idx] == y).mean())
    return Verification(images=len(images), agreement_top1=float((f == q).mean()), fp32_top1=fp32_top1,
                        int8_top1=int8_top1, labelled=labelled, skipped=len(images.skipped))
