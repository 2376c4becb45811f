"""The held-out split: stratified, deterministic by seed, at least one held-out image per class of two or more."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ExportError


@dataclass(frozen=True)
class Split:
    train: dict[str, list[int]]  # class name -> indices into that class's images
    held_out: dict[str, list[int]]


def stratified_split(counts: dict[str, int], fraction: float, seed: int) -> Split:
    """Per class, ``round(n * fraction)`` images held out (at least 1 when n >= 2, never all of them)."""
    if not 0 < fraction < 1:
        raise ExportError(f"--held-out must be between 0 and 1 (a fraction of each class), got {fraction}")
    train, held = {}, {}
    for k, (name, n) in enumerate(sorted(counts.items())):
        # One generator per class, seeded by (seed, class position): a class's split does not depend on
        # how many images the other classes have.
        order = np.random.default_rng([seed, k]).permutation(n).tolist()
        m = min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0
        held[name], train[name] = sorted(order[:m]), sorted(order[m:])
    return Split(train, held)
