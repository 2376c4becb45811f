"""A thread that calls ``tick()`` every ``interval`` seconds while a ``with`` block runs: for tests that
watch or poke a running daemon (sample its memory, signal its decoders) meanwhile."""
from __future__ import annotations

import threading


class Ticker:
    interval = 0.02

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=type(self).__name__)

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def __enter__(self):  # type: ignore[no-untyped-def]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
