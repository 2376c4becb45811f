"""Which head, measured: a validation split picks it; k-fold cross-validation reports it on small
sets."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..tools.progress import Progress
from .features import Features
from .head import Head, fit_knowledge, fit_linear, mean_recall
from .report import confusion, recall
from .split import stratified_split

VALIDATION = 0.2  # of the training part: picks the head and stops the linear one early


def choose_head(feats: Features, train: dict[str, list[int]], similarity: np.ndarray,
                seed: int, kind: str | None = None,
                bar: Progress | None = None) -> tuple[Head, dict[str, object]]:
    """Both heads fitted on the training part less a validation split; the better recall wins."""
    n = len(feats.classes)
    val = stratified_split({c: len(v) for c, v in train.items()}, VALIDATION, seed + 1)
    fit_idx = [v[i] for c, v in train.items() for i in val.train[c]]
    val_idx = [v[i] for c, v in train.items() for i in val.held_out[c]]
    all_idx = [i for v in train.values() for i in v]
    vf, vs, vy = feats.arrays(val_idx, 1)
    own_bar = bar is None
    bar = Progress(iter(()), "training (epochs)") if bar is None else bar
    f, s, y = feats.arrays(fit_idx)
    linear = fit_linear(f, y, n, vf, vy, on_epoch=bar.advance) if kind != "knowledge" else None
    knowledge = fit_knowledge(*feats.arrays(all_idx)[1:], n, similarity)
    if own_bar:
        bar.close()
    scores = {}
    if len(vy) and kind is None:
        probe = fit_knowledge(s, y, n, similarity)
        scores = {h.kind: round(mean_recall(h.scores(vf, vs).argmax(1), vy, n), 4)
                  for h in (probe, linear)}
    better = bool(scores) and scores["linear"] > scores["knowledge"]
    pick_linear = kind == "linear" or (kind is None and better)
    head = linear if pick_linear else knowledge
    return head, {"kind": head.kind, "validation_mean_recall": scores, "validation_images": len(vy),
                  "epochs": head.epochs}


def cross_validate(feats: Features, kind: str, similarity: np.ndarray, k: int,
                   seed: int) -> dict[str, Any]:
    """Each image held out once (``k`` stratified folds): the chosen kind refitted per fold."""
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
    bar = Progress(iter(()), f"{k}-fold cross-validation (epochs)")
    for f in range(k):
        train = {c: [i for i in idx[c] if fold_of[i] != f] for c in names}
        test = [i for i in range(len(feats.labels)) if fold_of[i] == f]
        if not test:
            continue
        head, _ = choose_head(feats, train, similarity, seed, kind=kind, bar=bar)
        pred[test] = head.scores(*feats.arrays(test, 1)[:2]).argmax(1)
    bar.close()
    y = np.array(feats.labels)
    return {"k": k, "images": len(y), "top1": round(float((pred == y).mean()), 4),
            "mean_recall": round(mean_recall(pred, y, n), 4),
            "per_class_recall": recall(confusion(y, pred, n), names)}
