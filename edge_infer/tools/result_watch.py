"""Result files as the daemon writes them, seen by inotify: how the end-to-end bench knows when each photo
is done without polling the results folder (which would take CPU from the daemon it measures).
"""
from __future__ import annotations

import os
import time
from pathlib import Path


class ResultWatch:
    """Result files as they land, by inotify (IN_MOVED_TO: results are renamed into place).

    The bench must not poll for results: a scan every millisecond costs the daemon a share of its two cores
    and adds up to a millisecond to every latency. A thread blocks in ``read`` and stamps each name.
    """

    IN_MOVED_TO = 0x80

    def __init__(self, folder: Path) -> None:
        import ctypes
        import threading

        folder.mkdir(parents=True, exist_ok=True)
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_CLOEXEC)
        if self._fd < 0 or libc.inotify_add_watch(self._fd, str(folder).encode(), self.IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), f"inotify on {folder}")
        self.seen: dict[str, float] = {}
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, name="result-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        import struct

        while True:
            try:
                buf = os.read(self._fd, 1 << 16)
            except OSError:
                return  # closed
            now = time.perf_counter()
            with self._changed:
                i = 0
                while i < len(buf):
                    _, _, _, n = struct.unpack_from("iIII", buf, i)
                    self.seen[buf[i + 16:i + 16 + n].rstrip(b"\0").decode()] = now
                    i += 16 + n
                self._changed.notify_all()

    def wait_for(self, names: set[str], timeout: float) -> dict[str, float]:
        with self._changed:
            self._changed.wait_for(lambda: names <= self.seen.keys(), timeout)
            return {n: self.seen[n] for n in names if n in self.seen}

    def close(self) -> None:
        os.close(self._fd)
