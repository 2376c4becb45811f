"""Parked inputs: their record is durable, but they cannot be moved (or deleted) out of the inbox because
of themselves: an immutable flag, a sub-folder the daemon may not write to, a file standing where their
``done/`` folder must go. (Also the rarer input that cannot get a record at all, its results folder and its
failed folder both refusing it: parked without one, for this run.)

A parked input leaves the pipeline, so the writer goes on with the others. The folder source skips it at
every rescan and restart while its ``(st_dev, st_ino, st_size, st_mtime_ns)`` stays the same; changed, it is
a new input and is processed again. Its acknowledgement alone is retried (one rename, never a new record),
with backoff up to once a minute: the operator's fix (``chattr -i``, a chmod of its folder, removing the file
in the way) does not change the input, so waiting for a change would wait for ever.

The list is kept in ``<output.dir>/.parked.json``, rewritten atomically when it changed, so that a restart
does not meet the same wall; ``edge_infer_inputs_parked{source}`` counts it.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Container

from ..errors import InputError
from ..ops.metrics import Metrics
from ..pipeline.jobs import FolderInput
from ..sinks.durable import write_json_atomic
from .inflight import input_key

log = logging.getLogger(__name__)
PARKED_NAME = ".parked.json"
FIRST_RETRY_S = 2.0
MAX_RETRY_S = 60.0
Key = tuple[int, ...]


class Parked(Exception):
    """Raised by the writer once an input is parked; ``recorded``: its record is durable all the same."""

    def __init__(self, recorded: bool) -> None:
        super().__init__()
        self.recorded = recorded


def file_key(path: str | Path) -> Key | None:
    """The input as a parked entry knows it (None: gone)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return input_key(st)


@dataclass
class ParkedInput:
    """One parked input. ``recorded``: its result or failure record is durable; ``error``: the failure
    record's (kind, message) when it failed (it goes to the failed folder)."""

    source: str
    rel: str
    path: str
    key: Key | None
    reason: str
    recorded: bool
    error: tuple[str, str] | None = None
    sha256: str | None = None
    stored_as: str | None = None  # the name it is filed under (its record's, and its own in done/ or failed/)
    since: float = 0.0
    # This run only:
    job: FolderInput | None = None
    next_try: float = 0.0
    delay: float = FIRST_RETRY_S

    def as_job(self) -> FolderInput:
        """The job to acknowledge: this run's own, or one rebuilt from what an earlier run saved."""
        if self.job is not None:
            return self.job
        return FolderInput(source=self.source, rel=self.rel, path=Path(self.path),
                           sha256=self.sha256, committed=True, spooled=True,
                           error=InputError(*self.error) if self.error else None,
                           stored_as=self.stored_as)

    def saved(self) -> dict[str, Any]:
        return {"source": self.source, "rel": self.rel, "path": self.path, "key": self.key, "reason": self.reason,
                "error": self.error, "sha256": self.sha256, "stored_as": self.stored_as, "since": self.since}


class ParkedInputs:
    """Shared by the writer (which parks, retries and releases) and the folder sources (which skip)."""

    def __init__(self, path: Path, metrics: Metrics | None = None) -> None:
        self.path, self._metrics = path, metrics
        self._lock = threading.Lock()
        self._entries: dict[str, ParkedInput] = {}  # by the input's absolute path
        self._dirty = False
        self._failing = False  # the last save failed: logged once
        self._sources: set[str] = set()

    def load(self) -> None:
        """What earlier runs parked (with a record: one without is simply processed again)."""
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8", errors="surrogateescape"))["inputs"]
            entries = [ParkedInput(**{**e, "key": tuple(e["key"]) if e["key"] else None,
                                      "error": tuple(e["error"]) if e["error"] else None}, recorded=True)
                       for e in saved]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("cannot read the parked inputs %s (%s): they are retried as new inputs", self.path, e)
            return
        with self._lock:
            self._entries = {e.path: e for e in entries}
            self._counted()
        if entries:
            log.info("%d input(s) parked by an earlier run are skipped until they change, and their "
                     "acknowledgement retried (%s)", len(entries), self.path)

    def park(self, job: FolderInput, reason: str, recorded: bool) -> Parked:
        """Park ``job``'s input (logged once, not at each retry); the exception for the writer to raise."""
        path = str(job.path)
        with self._lock:
            if path in self._entries:
                return Parked(recorded)
            key = job.identity or file_key(path)
            error = (job.error.kind, job.error.message) if job.error is not None and recorded else None
            entry = ParkedInput(job.source, job.rel, path, key, reason, recorded, error, job.sha256, job.stored_as,
                                time.time(), job=job)
            self._later(entry)
            self._entries[path] = entry
            self._dirty = recorded or self._dirty  # one without a record is kept for this run only
            self._counted()
        log.warning("%s/%r is parked: %s; %s", job.source, job.rel, reason,
                    "its record stands, and it stays where it is (skipped until it changes; moving it is retried, "
                    "up to once a minute)" if recorded else
                    "it stays where it is, without a record; retried up to once a minute, and at the next start")
        return Parked(recorded)

    def retry_due(self, settle: Callable[[FolderInput], None],
                  recorded_now: Callable[[FolderInput], None], sources: Container[str]) -> None:
        """The writer's one more try (``settle``) for each parked input that is due; ``recorded_now`` for one
        that had no record. Any error puts it off again: a parked input never holds or blocks the others."""
        for entry in self.due():
            if entry.source not in sources or not self.unchanged(entry):
                self.release(entry)  # gone, changed (then the source takes it as a new input), or unwatched now
                continue
            job = entry.as_job()
            try:
                settle(job)
            except (Parked, OSError):
                self.later(entry)
                continue
            self.release(entry)
            if not entry.recorded:
                recorded_now(job)
            log.info("%s/%r, parked since %s, is acknowledged now", job.source, job.rel,
                     time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.since)))
        self.flush()

    def skip(self, path: str) -> bool:
        """For the folder source: True while ``path`` is parked and unchanged; a changed one is forgotten."""
        with self._lock:
            entry = self._entries.get(path)
        if entry is None:
            return False
        if self.unchanged(entry):
            return True
        self.release(entry)
        log.info("%s/%r changed while parked: processed as a new input", entry.source, entry.rel)
        return False

    def unchanged(self, entry: ParkedInput) -> bool:
        return entry.key is not None and file_key(entry.path) == entry.key

    def due(self) -> list[ParkedInput]:
        now = time.monotonic()
        with self._lock:
            return [e for e in self._entries.values() if e.next_try <= now]

    def later(self, entry: ParkedInput) -> None:
        with self._lock:
            self._later(entry)

    def _later(self, entry: ParkedInput) -> None:
        entry.next_try = time.monotonic() + entry.delay
        entry.delay = min(entry.delay * 2, MAX_RETRY_S)

    def release(self, entry: ParkedInput) -> None:
        with self._lock:
            if self._entries.get(entry.path) is entry:
                del self._entries[entry.path]
                self._dirty = True
                self._counted()

    def flush(self) -> None:
        """Save the list if it changed (the writer calls this between commits)."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            saved = {"inputs": [e.saved() for e in self._entries.values() if e.recorded]}
        try:
            write_json_atomic(self.path, saved, self.path.parent)
        except OSError as e:
            with self._lock:
                self._dirty = True
            if not self._failing:
                log.warning("cannot save the parked inputs %s (%s); kept in memory, saved when it can be",
                            self.path, e.strerror or e)
            self._failing = True
            return
        self._failing = False

    def _counted(self) -> None:
        if self._metrics is None:
            return
        counts: dict[str, int] = {}
        for e in self._entries.values():
            counts[e.source] = counts.get(e.source, 0) + 1
        self._sources |= set(counts)
        for source in self._sources:
            self._metrics.set_parked(source, counts.get(source, 0))
