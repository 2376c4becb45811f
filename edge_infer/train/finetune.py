"""Fine-tuning on CPU: the pretrained layers frozen and run once per view, a new classifier (and optionally
the last layers) trained on their cached output.

Why this shape (measured on the 7-group set, two cores; see README "Your own classes" and the defaults'
comments in ``settings.py``):
- The frozen layers are most of the compute (~0.15 s per 224 x 224 view on two shared cores); their output
  is cached per view, so each epoch only runs the trained tail on 7 x 7 activations.
- First the new classifier alone on the pooled features (cheap, many epochs), then, with
  ``train_layers`` > 0, the tail and the classifier together at a lower rate: the tail starts from a head
  that already fits, so the first gradients do not wreck the pretrained tail.
- BatchNorm stays in eval mode: with a handful of images per class, batch statistics would be noise;
  its affine weights still train.
- Class imbalance: the loss weighs each class by 1 / its share of the training images.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np

from ..errors import ExportError
from ..tools.progress import Progress
from .settings import FineTuneSettings

log = logging.getLogger(__name__)


def new_head(model, num_classes: int) -> None:  # type: ignore[no-untyped-def]
    """Replace the ImageNet classifier with a zero-initialised one for ``num_classes``."""
    import torch
    from torch import nn

    old = model.classifier[-1]
    head = nn.Linear(old.in_features, num_classes)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    model.classifier[-1] = head


def class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


def fine_tune(model, chunks: Iterable[np.ndarray], n_chunks: int, labels: np.ndarray,  # type: ignore[no-untyped-def]
              settings: FineTuneSettings) -> dict[str, Any]:
    """Train ``model`` in place on the views in ``chunks`` (N x CHW float32) with ``labels`` (one per view).

    Returns what happened (final training losses), for the manifest.
    """
    import torch
    from torch import nn

    torch.manual_seed(settings.seed)
    num_classes = model.classifier[-1].out_features
    if settings.train_layers > len(model.features):
        raise ExportError(f"--train-layers {settings.train_layers}: the network has {len(model.features)} layers")
    cut = len(model.features) - settings.train_layers
    frozen, tail = model.features[:cut], model.features[cut:]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        cached = torch.cat([frozen(torch.from_numpy(b)) for b in Progress(chunks, "frozen layers, once per view",
                                                                         total=n_chunks)])
        pooled = torch.cat([_pool(tail(cached[i:i + 64])) for i in range(0, len(cached), 64)])
    y = torch.from_numpy(labels.astype(np.int64))
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights(labels, num_classes)),
                                  label_smoothing=settings.label_smoothing)
    gen = torch.Generator().manual_seed(settings.seed)
    head = model.classifier[-1]
    for p in head.parameters():
        p.requires_grad_(True)
    # Stage 1: the classifier alone, on features that do not change.
    opt = torch.optim.AdamW(head.parameters(), lr=settings.head_lr, weight_decay=settings.weight_decay)
    head_loss = _epochs(lambda idx: loss_fn(head(pooled[idx]), y[idx]), opt, len(y), settings.head_epochs,
                        settings.batch, gen, "training the classifier")
    tail_loss = None
    if settings.train_layers > 0 and settings.tail_epochs > 0:
        # Stage 2: the tail and the classifier together; BatchNorm keeps its running statistics (eval mode).
        for p in tail.parameters():
            p.requires_grad_(True)
        opt = torch.optim.AdamW([{"params": tail.parameters(), "lr": settings.tail_lr},
                                 {"params": head.parameters(), "lr": settings.tail_lr}],
                                weight_decay=settings.weight_decay)
        tail_loss = _epochs(lambda idx: loss_fn(head(_pool(tail(cached[idx]))), y[idx]), opt, len(y),
                            settings.tail_epochs, settings.batch, gen, f"training the last {settings.train_layers} layer(s)")
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return {"views": len(y), "head_loss": head_loss, "tail_loss": tail_loss}


def _pool(x):  # type: ignore[no-untyped-def]
    return x.mean((2, 3))


def _epochs(step, opt, n: int, epochs: int, batch: int, gen, label: str) -> float:  # type: ignore[no-untyped-def]
    import torch

    loss_sum = 0.0
    for _ in Progress(range(epochs), label):
        order = torch.randperm(n, generator=gen)
        loss_sum, seen = 0.0, 0
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = step(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
        loss_sum /= max(seen, 1)
    return round(loss_sum, 4)
