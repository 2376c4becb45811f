"""``edge-infer train`` with the runtime alone: features from the deployed int8 backbone, a numpy
head, the head appended to that same int8 graph (no second calibration, no torch, no ``onnx``
package).

Memory is bounded by design: images are decoded one at a time and only their feature vectors kept
(``features.py``); the model is edited as bytes (``onnx_wire.py``). ``--folds K`` cross-validates on
top of the held-out split when a set is small.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..classifier.manifest import MODEL_NAME, default_model_path, sha256_file, write_manifest
from ..decoding.preprocess import PreprocessSpec, prepare
from ..errors import ExportError, VerificationError
from ..sinks.writable import check_writable
from ..tools.progress import Progress
from .dataset import find_classes
from .features import Features, backbone, extract, session_from_bytes
from .head import Head, mean_recall, stock_similarity
from .plot import confusion_png
from .report import confusion, recall
from .selftest_files import SELFTEST_DIR, pick, write_selftest
from .selection import VALIDATION, choose_head, cross_validate
from .split import stratified_split
from .summary import RuntimeReport

OUTPUT = "class_logits"
SPARE = 1 << 20  # the manifest and the confusion plot, with room to spare
MIN_IMAGES = 2  # per class: one to train on, one to verify on


@dataclass(frozen=True)
class RuntimeOptions:
    data: Path
    out: Path
    seed: int = 0
    held_out: float = 0.25
    views: int = 1  # centre crops: random crops measured 1-3 points worse (5-fold, 7 groups)
    folds: int = 0
    threads: int = 0
    min_agreement: float = 0.90  # of the served graph with the numpy head, on the held-out split


def check_space(out: Path, need: int) -> None:
    free = shutil.disk_usage(out).free
    if free < need:
        raise ExportError(f"no space for the model in {out}: it needs {need / 1e6:.1f} MB, "
                          f"{free / 1e6:.1f} MB are free")


def run_runtime_training(opts: RuntimeOptions) -> RuntimeReport:
    start, cpu0 = time.monotonic(), time.process_time()
    classes = find_classes(opts.data)
    out = opts.out.resolve()
    check_writable(out, ExportError)
    stratified_split({c: 2 for c in classes}, opts.held_out, opts.seed)  # checks the fraction first
    feats = extract(classes, opts.views, opts.seed, opts.threads)
    names = feats.classes
    _check_counts(feats)
    idx = {c: [i for i, k in enumerate(feats.labels) if k == n] for n, c in enumerate(names)}
    split = stratified_split({c: len(v) for c, v in idx.items()}, opts.held_out, opts.seed)
    train = {c: [idx[c][i] for i in split.train[c]] for c in names}
    held = [idx[c][i] for c in names for i in split.held_out[c]]
    model, pooled = backbone()
    similarity = stock_similarity(model)
    head, choice = choose_head(feats, train, similarity, opts.seed)
    graph = _with_head(model, pooled, head)
    truth = np.array([feats.labels[i] for i in held], dtype=np.int64)
    numpy_pred = head.scores(*feats.arrays(held, 1)[:2]).argmax(1)
    served = _serve(graph, [feats.files[i] for i in held], opts.threads)
    n = len(names)
    matrix = confusion(truth, served, n)
    recalls = {"int8": recall(matrix, names)}
    folds = None
    if opts.folds:
        folds = cross_validate(feats, head.kind, similarity, opts.folds, opts.seed)
    counts = {c: {"train": len(train[c]), "held_out": len(split.held_out[c]),
                  "skipped": len(feats.skipped[c])} for c in names}
    held_files = [feats.files[i] for i in held]
    chosen = pick(truth, served)
    top1 = float((served == truth).mean()) if len(truth) else 0.0
    need = len(graph) + sum(held_files[i].stat().st_size for i in chosen) + SPARE
    try:
        check_space(out, need)
        (out / MODEL_NAME).write_bytes(graph)
        write_selftest(out, held_files, truth, names, chosen)
        confusion_png(matrix, names, out / "confusion.png",
                      f"int8, held-out split: top-1 {100 * top1:.1f}% of {len(truth)}")
    except OSError as e:
        raise ExportError(f"cannot write the model to {out}: {e.strerror or e}") from e
    seconds = round(time.monotonic() - start, 1)
    training = {
        "method": "runtime", "head": choice, "classes": names, "counts": counts,
        "split": {"seed": opts.seed, "held_out_fraction": opts.held_out, "method": "stratified"},
        "settings": {"views": opts.views, "train_layers": 0, "threads": opts.threads,
                     "validation_fraction": VALIDATION},
        "accuracy": {"int8": round(top1, 4),
                     "mean_recall_int8": round(mean_recall(served, truth, n), 4)},
        "per_class_recall": recalls, "confusion": {"int8": matrix.tolist()},
        "folds": folds, "seconds": seconds, "cpu_seconds": round(time.process_time() - cpu0, 1),
        "data_sha256": _digest(feats),
    }
    agreement = float((served == numpy_pred).mean()) if len(truth) else 1.0
    verification = {"images": len(truth), "int8_top1": round(top1, 4), "on": "held-out split",
                    "agreement_top1": round(agreement, 4),
                    "agreement_with": "the numpy head on the same features",
                    "min_agreement": opts.min_agreement, "passed": agreement >= opts.min_agreement}
    try:
        _manifest(out, names, training, verification)
    except OSError as e:
        raise ExportError(f"cannot write the manifest to {out}: {e.strerror or e}") from e
    report = RuntimeReport(out, names, counts, recalls, matrix, top1, verification["agreement_top1"],
                           choice, folds, seconds)
    if not verification["passed"]:
        raise VerificationError(
            f"the served graph agrees with the trained head on {100 * agreement:.1f}% of "
            f"{len(truth)} held-out images, under --min-agreement {100 * opts.min_agreement:.1f}%"
            f"\n{report.text()}")
    return report


def _check_counts(feats: Features) -> None:
    for k, c in enumerate(feats.classes):
        have = feats.labels.count(k)
        bad = feats.skipped[c]
        if have == 0:
            raise ExportError(f"class {c!r} has no readable images: all {len(bad)} of its files "
                              f"were skipped (e.g. {bad[0][0]}: {bad[0][1]})")
        if have < MIN_IMAGES:
            skipped = f" ({len(bad)} unreadable skipped)" if bad else ""
            raise ExportError(f"class {c!r} has {have} readable image{'s' * (have != 1)}{skipped}; "
                              f"training needs at least {MIN_IMAGES} per class (one to train on, "
                              "one to verify on)")


def _with_head(model: bytes, pooled: str, head: Head) -> bytes:
    from . import onnx_wire

    nodes, inits = head.onnx(pooled, OUTPUT)
    return onnx_wire.edit(model, [(OUTPUT, None)], nodes, inits)


def _serve(graph: bytes, files: list[Path], threads: int) -> np.ndarray:
    """The assembled graph run on the held-out photos as the daemon runs it."""
    session = session_from_bytes(graph, threads)
    spec, preds = PreprocessSpec(), []
    for f in Progress(files, "verification"):
        scores = session.run([OUTPUT], {"input": prepare(f, spec).tensor[None]})[0]
        preds.append(int(scores.argmax()))
    return np.array(preds, dtype=np.int64)


def _digest(feats: Features) -> str:
    import hashlib

    h = hashlib.sha256()
    for k, f in zip(feats.labels, feats.files):
        h.update(f"{feats.classes[k]}\0{f.name}\0{f.stat().st_size}\n".encode())
    return h.hexdigest()


def _manifest(out: Path, names: list[str], training: dict[str, Any],
              verification: dict[str, Any]) -> None:
    stock = json.loads(default_model_path().with_name("model.json").read_text(encoding="utf-8"))
    m = {k: v for k, v in stock.items() if k not in ("verification", "labels", "sha256")}
    m["architecture"] = {**stock.get("architecture", {}), "num_classes": len(names),
                         "head": training["head"]["kind"]}
    m["output"] = {"name": OUTPUT, "shape": ["batch", len(names)], "kind": "logits"}
    m["backbone_sha256"] = stock["sha256"]
    m["tools"] = {**stock.get("tools", {}), "edge_infer_train": __version__}
    m["created_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    m.update(labels=names, sha256=sha256_file(out / MODEL_NAME), selftest=SELFTEST_DIR,
             training=training, verification=verification)
    write_manifest(out / MODEL_NAME, m)
