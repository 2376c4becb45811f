"""Preallocated image tensors, recycled: the hot path allocates no large arrays.

Each image's pixels are written by a worker straight into a tensor taken from the pool, copied by the
inference thread into its preallocated batch, and the tensor goes back to the pool. A fixed number of
tensors also bounds how many prepared images can exist at once: an empty pool is backpressure.
"""
from __future__ import annotations

import queue

import numpy as np


class TensorPool:
    def __init__(self, count: int, shape: tuple[int, ...], dtype: type = np.float32) -> None:
        self.count = count
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(count):
            self._free.put(np.empty(shape, dtype))

    def acquire(self, timeout: float) -> np.ndarray | None:
        """A free tensor, or None when none came free within ``timeout`` (the caller checks for stop)."""
        try:
            return self._free.get(timeout=timeout)
        except queue.Empty:
            return None

    def release(self, tensor: np.ndarray | None) -> None:
        if tensor is not None:
            self._free.put(tensor)
