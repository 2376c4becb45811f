"""What the stages tell each other, in one small object the app creates and hands to each of them.

A stage changes only its own counts and reads the others'; no stage reads another's attributes. The counts
steer waiting: the batcher waits a few milliseconds for more only while inputs are being prepared, the
writer waits for a running batch to commit it in the same group, and the drain waits for inputs in flight.
"""
from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from .records import model_ref

if TYPE_CHECKING:
    from ..classifier.session import ModelSession
    from .jobs import FolderInput


class _Count:
    """A thread-safe count; reading it takes no lock (an int read is atomic)."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self._n += n

    @property
    def value(self) -> int:
        return self._n

    @contextmanager
    def held(self) -> Iterator[None]:
        """One more for the duration of the block."""
        self.add(1)
        try:
            yield
        finally:
            self.add(-1)


class PipelineState:
    """``in_flight``: inputs taken from the sources and not yet acknowledged (the drain waits for zero);
    ``preparing``: inputs a worker is preparing now; ``inferring``: batches being run now; ``serving``: the
    model serving now (the inference threads set it as they swap in a reloaded one)."""

    def __init__(self, *, jobs: "queue.Queue[FolderInput]", serving: ModelSession) -> None:
        self._jobs = jobs
        self.in_flight = _Count()
        self.preparing = _Count()
        self.inferring = _Count()
        self.serving = serving

    def more_coming(self) -> bool:
        """Inputs queued or being prepared: worth waiting a few ms to batch them together."""
        return self._jobs.qsize() > 0 or self.preparing.value > 0

    def model_ref(self) -> dict[str, str]:
        """The serving model as results name it: for records no model made (failures)."""
        s = self.serving
        return model_ref(s.manifest.name, s.sha256, s.precision)
