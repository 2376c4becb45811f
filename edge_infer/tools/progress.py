"""A dependency-free progress bar on stderr, drawn only when stderr is a terminal."""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """``for x in Progress(items, "verify"): ...``; silent when the stream is not a TTY (logs, CI, pipes)."""

    def __init__(self, items: Iterable[T], label: str, total: int | None = None,
                 stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self._items = items
        self.label = label
        self.total = total if total is not None else (len(items) if hasattr(items, "__len__") else None)  # type: ignore[arg-type]
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self._last_draw = 0.0
        self._start = time.monotonic()

    def __iter__(self) -> Iterator[T]:
        for item in self._items:  # type: ignore[attr-defined]
            yield item
            self.advance()
        self.close()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        # Redraw at most 10 times a second: a terminal write per item costs more than a fast item.
        if self.enabled and (now - self._last_draw > 0.1 or self.done == self.total):
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._start, 1e-9)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 30)
            text = f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {rate:5.1f}/s"
        else:
            text = f"\r{self.label} {self.done} {rate:5.1f}/s"
        self.stream.write(text)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()
