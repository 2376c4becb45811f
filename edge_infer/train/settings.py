"""Fine-tuning settings: declared once here, light to import (the command line shows the defaults)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FineTuneSettings:
    views: int = 4  # per training image: the centre crop + (views - 1) random crops/flips
    train_layers: int = 1  # of ``model.features``, from the end (1: the last 1x1 conv to 1280 channels)
    head_epochs: int = 60
    tail_epochs: int = 8
    head_lr: float = 1e-2
    tail_lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    batch: int = 32
    seed: int = 0
    threads: int = 0  # 0: one per core

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
