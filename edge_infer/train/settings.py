"""Fine-tuning settings: declared once here, light to import (the command line shows the defaults)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FineTuneSettings:
    views: int = 4  # per training image: the centre crop + (views - 1) random crops/flips
    # Of ``model.features``, from the end, trained after the classifier (1: the last 1x1 conv to 1280
    # channels). 0 by default: on the 7-group set it lost 8-10 points of held-out top-1 (overfitting ~150
    # photos); on larger sets of one kind of picture more layers may pay (``--train-layers``).
    train_layers: int = 0
    head_epochs: int = 30
    tail_epochs: int = 5
    head_lr: float = 3e-4  # 1e-2 for 60 epochs overfits: 48% held-out top-1 against 82% (7-group set)
    tail_lr: float = 1e-4
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    batch: int = 32
    seed: int = 0
    threads: int = 0  # 0: one per core

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
