"""``edge-infer train``: a folder per class -> fine-tuned MobileNetV2 -> the export's verified int8, with report.

The export steps are ``export.steps``' own (``export_models``, ``common_manifest``, ``write_manifests``):
a trained model is checked and quantized exactly like an exported one, calibrated on training images and
verified on the held-out split, which the model has never seen.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..decoding.preprocess import PreprocessSpec, normalise
from ..errors import ExportError, VerificationError
from ..export.images import load_images
from ..export.network import TORCHVISION, load_network
from ..export.quantize import QuantSettings
from ..export.steps import common_manifest, export_models, write_manifests
from ..export.verify import Verification, logits
from ..sinks.writable import check_writable
from .augment import views
from .dataset import ClassImages, centre, find_classes, load_classes
from .finetune import fine_tune, new_head
from .plot import confusion_png
from .report import confusion, confusion_text, recall, recall_table
from .selftest_files import SELFTEST_DIR, pick, write_selftest
from .settings import FineTuneSettings
from .split import stratified_split

log = logging.getLogger(__name__)
CONFUSION_PNG = "confusion.png"


@dataclass(frozen=True)
class TrainOptions:
    data: Path
    out: Path
    weights: str
    width_mult: float = 1.0
    seed: int = 0
    held_out: float = 0.25
    finetune: FineTuneSettings = field(default_factory=FineTuneSettings)
    opset: int = 17
    quant: QuantSettings = field(default_factory=QuantSettings)
    calib_images: int = 64  # training images (centre crops) that calibrate the int8 ranges
    min_agreement: float = 0.90


@dataclass
class TrainReport:
    out: Path
    classes: list[str]
    counts: dict[str, dict[str, int]]
    verification: Verification
    recall: dict[str, dict[str, float | None]]
    matrix: np.ndarray  # int8's confusion on the held-out split
    seconds: float

    def text(self) -> str:
        v = self.verification
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        return "\n".join([
            recall_table(self.classes, self.counts, self.recall["fp32"], self.recall["int8"]),
            "",
            confusion_text(self.matrix, self.classes),
            "",
            f"held-out top-1: fp32 {pct(v.fp32_top1)}, int8 {pct(v.int8_top1)} on {v.images} images; "
            f"int8 agrees with fp32 on {pct(v.agreement_top1)}",
            f"trained in {self.seconds:.0f} s; confusion matrix: {self.out / CONFUSION_PNG}",
        ])


def run_training(opts: TrainOptions) -> TrainReport:
    import torch

    start = time.monotonic()
    find_classes(opts.data)  # the cheap checks (folder, classes) before anything is created
    out = opts.out.resolve()
    check_writable(out, ExportError)
    threads = opts.finetune.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    spec = PreprocessSpec()
    data = load_classes(opts.data, spec)
    classes = [c.name for c in data]
    split = stratified_split({c.name: len(c.files) for c in data}, opts.held_out, opts.seed)
    model, impl, weights_sha = load_network(opts.weights, opts.width_mult, num_classes=1000)
    new_head(model, len(classes))

    chunks, n_chunks, labels = _training_views(data, split.train, spec, opts.finetune)
    outcome = fine_tune(model, chunks, n_chunks, labels, opts.finetune)
    calib = _calibration(data, split.train, spec, opts.calib_images)
    held_files = [c.files[i] for c in data for i in split.held_out[c.name]]
    truth = np.array([k for k, c in enumerate(data) for _ in split.held_out[c.name]], dtype=np.int64)
    held = load_images(held_files, spec, "preparing the held-out split")
    held.names = [f"{f.parent.name}/{f.name}" for f in held_files]

    fp32, int8, diff = export_models(model, out, spec, opts.opset, calib, held.tensors, opts.quant)
    f = logits(fp32, held, "held-out fp32").argmax(1)
    q = logits(int8, held, "held-out int8").argmax(1)
    n = len(classes)
    verification = Verification(images=len(held), agreement_top1=float((f == q).mean()),
                                fp32_top1=float((f == truth).mean()), int8_top1=float((q == truth).mean()),
                                labelled=len(held), skipped=0)
    matrix = {"fp32": confusion(truth, f, n), "int8": confusion(truth, q, n)}
    recalls = {k: recall(m, classes) for k, m in matrix.items()}
    counts = {c.name: {"train": len(split.train[c.name]), "held_out": len(split.held_out[c.name]),
                       "skipped": len(c.skipped)} for c in data}
    write_selftest(out, held_files, truth, classes, pick(truth, q))
    confusion_png(matrix["int8"], classes, out / CONFUSION_PNG,
                  f"int8, held-out split: top-1 {100 * verification.int8_top1:.1f}% of {len(held)}")
    seconds = round(time.monotonic() - start, 1)
    training = {
        "classes": classes, "counts": counts,
        "split": {"seed": opts.seed, "held_out_fraction": opts.held_out, "method": "stratified"},
        "settings": {**opts.finetune.to_dict(), "threads": threads, "calib_images": len(calib)},
        "outcome": outcome,
        "accuracy": {"fp32": round(verification.fp32_top1 or 0.0, 4), "int8": round(verification.int8_top1 or 0.0, 4)},
        "per_class_recall": recalls,
        "confusion": {k: m.tolist() for k, m in matrix.items()},
        "seconds": seconds,
    }
    weights_file = "torchvision:IMAGENET1K_V1" if opts.weights == TORCHVISION else Path(opts.weights).name
    common = common_manifest(spec, opts.opset, opts.width_mult, impl, classes, weights_file, weights_sha,
                             {"images": len(calib), "source": "training split, centre crops"})
    passed = verification.agreement_top1 >= opts.min_agreement
    write_manifests(fp32, int8, common, opts.quant,
                    {**verification.to_dict(), "min_agreement": opts.min_agreement, "passed": passed,
                     "torch_max_diff": diff, "on": "held-out split"},
                    selftest=SELFTEST_DIR, training=training)
    report = TrainReport(out, classes, counts, verification, recalls, matrix["int8"], seconds)
    if not passed:
        raise VerificationError(
            f"int8 agrees with fp32 on {100 * verification.agreement_top1:.1f}% of {len(held)} held-out images, "
            f"under --min-agreement {100 * opts.min_agreement:.1f}%\n{report.text()}")
    return report


def _training_views(data: list[ClassImages], train: dict[str, list[int]], spec: PreprocessSpec,
                    settings: FineTuneSettings) -> tuple[Iterator[np.ndarray], int, np.ndarray]:
    """(chunks of views, made lazily so only one chunk of 224 x 224 tensors exists at a time; their count;
    the label of each view, in order)."""
    items = [(k, c.pixels[i]) for k, c in enumerate(data) for i in train[c.name]]
    per_chunk = max(1, settings.batch // settings.views)  # images per chunk

    def chunks() -> Iterator[np.ndarray]:
        rng = np.random.default_rng(settings.seed)
        for start in range(0, len(items), per_chunk):
            yield np.stack([v for _, pixels in items[start:start + per_chunk]
                            for v in views(pixels, spec, settings.views, rng)])

    labels = np.repeat(np.array([k for k, _ in items]), settings.views)
    return chunks(), -(-len(items) // per_chunk), labels


def _calibration(data: list[ClassImages], train: dict[str, list[int]], spec: PreprocessSpec, limit: int) -> np.ndarray:
    """Up to ``limit`` training images, spread evenly over them (so over the classes), as the runtime sees them."""
    pixels = [c.pixels[i] for c in data for i in train[c.name]]
    pick_idx = np.unique(np.linspace(0, len(pixels) - 1, min(limit, len(pixels))).round().astype(int))
    return np.stack([normalise(centre(pixels[i], spec.crop), spec) for i in pick_idx])

