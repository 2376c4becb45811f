"""Acknowledgements made durable in the background of the commit, at most once a second.

An input is acknowledged (moved to done/ or failed/, or deleted) only after its record is durable, so an
acknowledgement lost to a power cut loses nothing: the input is found in the inbox again and acknowledged
again, without being computed again (its record is there). Yet with nothing syncing its folders, a power
cut can take back every acknowledgement since the last sync that happened by chance, and each of those
inputs is then acknowledged (and, with MQTT, sent) once more: tests/power/run.py saw inputs back in the
inbox after nearly every cut. One sync of each folder touched, at most every ``interval_s``, bounds that to
the last second's inputs, at a cost of a few syncs a second under load and none when idle.

Destination folders are synced before the folders the inputs left: on a file system whose rename is not one
transaction (FAT), the input's new name is then durable before its old one is removed.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..sinks.durable import fsync_dir

log = logging.getLogger(__name__)


class AckSync:
    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._dests: dict[Path, None] = {}  # ordered sets
        self._sources: dict[Path, None] = {}
        self._synced_at = time.monotonic()

    def acknowledged(self, src: Path, dest: Path | None) -> None:
        """``src`` was moved to ``dest`` (or deleted: None)."""
        if dest is not None:
            self._dests[dest.parent] = None
        self._sources[src.parent] = None

    def flush(self, force: bool = False) -> None:
        if not (self._dests or self._sources) or (not force and time.monotonic() - self._synced_at < self.interval_s):
            return
        folders = [*self._dests, *(f for f in self._sources if f not in self._dests)]
        self._dests, self._sources = {}, {}
        self._synced_at = time.monotonic()
        for folder in folders:
            try:
                fsync_dir(folder)
            except OSError as e:  # a folder gone or not ours: the acknowledgement is only repeated after a cut
                log.debug("cannot sync %s after acknowledging inputs: %s", folder, e.strerror or e)
