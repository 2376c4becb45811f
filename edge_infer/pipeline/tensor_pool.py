"""Preallocated image tensors, recycled: the hot path allocates no large arrays.

Each image's pixels are written straight into a tensor taken from the pool (by a decoder process, through
shared memory), copied by the inference thread into its preallocated batch, and the tensor goes back to
the pool. A fixed number of tensors also bounds how many prepared images can exist at once: an empty pool
is backpressure.

The tensors live in one anonymous shared-memory file (``memfd_create``): a decoder process maps the same
file from its descriptor and writes slot ``i``, so crops cross the process boundary without a copy, a
pickle or a name in ``/dev/shm`` that a sandboxed process could not open anyway.
"""
from __future__ import annotations

import mmap
import os
import queue

import numpy as np


Layout = tuple[int, tuple[int, ...], str]  # count, shape of one tensor, dtype name


def layout_bytes(layout: Layout) -> int:
    count, shape, dtype = layout
    return count * int(np.prod(shape)) * np.dtype(dtype).itemsize


def slot_views(buffer: mmap.mmap, layout: Layout) -> list[np.ndarray]:
    """The tensors laid out one after the other in ``buffer`` (the same layout on both sides)."""
    count, shape, dtype = layout
    size = int(np.prod(shape))
    nbytes = size * np.dtype(dtype).itemsize
    return [np.frombuffer(buffer, dtype, count=size, offset=i * nbytes).reshape(shape) for i in range(count)]


class TensorPool:
    def __init__(self, count: int, shape: tuple[int, ...], dtype: type = np.float32) -> None:
        self.count, self.shape, self.dtype = count, shape, dtype
        self.nbytes = layout_bytes(self.layout())
        self.fd: int | None = None
        if hasattr(os, "memfd_create"):
            self.fd = os.memfd_create("edge-infer-tensors", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, self.nbytes)
            self._map = mmap.mmap(self.fd, self.nbytes)
        else:  # no memfd (not Linux): tensors for this process only
            self._map = mmap.mmap(-1, self.nbytes)
        self.tensors = slot_views(self._map, self.layout())
        self._slot = {t.ctypes.data: i for i, t in enumerate(self.tensors)}
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        for t in self.tensors:
            self._free.put(t)

    def acquire(self, timeout: float) -> np.ndarray | None:
        """A free tensor, or None when none came free within ``timeout`` (the caller checks for stop)."""
        try:
            return self._free.get(timeout=timeout)
        except queue.Empty:
            return None

    def release(self, tensor: np.ndarray | None) -> None:
        if tensor is not None:
            self._free.put(tensor)

    def slot(self, tensor: np.ndarray) -> int:
        """The index of ``tensor`` in the shared file: what a decoder process is told to write."""
        return self._slot[tensor.ctypes.data]

    def layout(self) -> Layout:
        """What a decoder process needs to map the same tensors: count, shape, dtype name."""
        return self.count, self.shape, np.dtype(self.dtype).name
