"""Camera results: one JSON object a line, appended to files rotated by size and by day.

No fsync and no file per frame: an SD card is written once per line, buffered by the OS. Each line goes
out in one ``write`` on an ``O_APPEND`` descriptor, so a reader never sees half a line from us; after a
power cut the last lines may be missing, which for a sampled video feed is the right trade.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any, Callable

from .durable import encode_json

log = logging.getLogger(__name__)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class JsonlSink:
    """Appends results for one camera under ``folder``; keeps at most ``keep_files`` files."""

    def __init__(self, folder: Path, prefix: str, rotate_bytes: int, keep_files: int,
                 clock: Callable[[], dt.datetime] = _utc_now) -> None:
        self.folder, self.prefix = folder, prefix
        self.rotate_bytes, self.keep_files = rotate_bytes, keep_files
        self._clock = clock
        self._fd: int | None = None
        self._day = ""
        self._size = 0
        self.path: Path | None = None

    def append(self, obj: dict[str, Any]) -> None:
        line = encode_json(obj)
        now = self._clock()
        if self._fd is None or self._size + len(line) > self.rotate_bytes or now.strftime("%Y%m%d") != self._day:
            self._rotate(now)
        assert self._fd is not None
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]
        self._size += len(line)

    def _rotate(self, now: dt.datetime) -> None:
        self.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        # Names sort in time order: the oldest are the first to go.
        stamp = now.strftime("%Y%m%dT%H%M%S.%f")
        self.path = self.folder / f"{self.prefix}-{stamp}.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._day = now.strftime("%Y%m%d")
        self._prune()

    def _prune(self) -> None:
        files = sorted(self.folder.glob(f"{self.prefix}-*.jsonl"))
        for old in files[:-self.keep_files]:
            try:
                old.unlink()
            except OSError as e:
                log.warning("cannot remove old results file %s: %s", old, e)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
