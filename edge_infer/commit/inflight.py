"""The in-flight journal: which inputs were being worked on when the daemon itself last died.

A decoder that crashes costs one input (workers.py). What this catches is an input that takes the whole
daemon down (an out-of-memory kill of the service, a crash in a library of the daemon's own process): on
restart it would be first in line again, and the unit would restart into the same crash forever. Message
queues call this a poison message and move it to a dead-letter queue after N deliveries; here N is two.

Before an input is decoded one line is appended, and another when its decoder has answered: only the
inputs being decoded when the daemon dies are held against (one per worker), not the ~10 waiting for
inference or their commit, which every random kill would otherwise mark. A plain ``write``, never fsynced:
it only has to outlive the daemon's process, and the kernel keeps its pages; a power cut is no input's fault and is not held against any. At start, a journal that does
not end with the clean-exit line means the daemon died: every input started and not finished gets a strike.
An input in flight at two unclean exits in a row is quarantined: failed as ``crashed`` without being decoded
again (moving it back into the inbox retries it). A decode that finishes, or a clean exit, forgives its
strike: one crash of bad luck quarantines nothing.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import InputError

log = logging.getLogger(__name__)
Key = tuple[int, ...]
JOURNAL_NAME = ".inflight.jsonl"  # in output.dir
COMPACT_BYTES = 1 << 20  # rewritten (only what is still open) once it grows past this
STRIKES = 2


def input_key(st: os.stat_result) -> Key:
    """An input as the journal knows it, from its open descriptor's ``fstat``: no read, no hash (the crash
    may come while hashing). A different file of the same name, or the same file rewritten, is another key."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class InflightJournal:
    """``open()`` at start (recovery), ``check``/``started`` before each decode, ``committed`` after each
    commit, ``close()`` at a clean exit. Thread-safe: the workers and the writer share it."""

    def __init__(self, path: Path, strikes: int = STRIKES, compact_bytes: int = COMPACT_BYTES) -> None:
        self.path, self._limit, self._compact_bytes = path, strikes, compact_bytes
        self._lock = threading.Lock()
        self._opened = False
        self._failing = False  # the last append failed: logged once, not once per input
        self._open: dict[Key, tuple[str, str]] = {}  # started, not committed: key -> (source, rel)
        self._strikes: dict[Key, tuple[int, str, str]] = {}  # key -> (strikes, source, rel)
        self.quarantined: set[Key] = set()

    # -- start ----------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Read what the last run left, count its strikes, and start a compact journal for this run."""
        clean, started, strikes = self._read()
        if not clean:
            # In a row: a strike stands only while the input is in flight at each death; a death it was not
            # in flight at (it was not reached) forgives it. Quarantined inputs stay so until their record.
            strikes = {k: v for k, v in strikes.items() if k in started or v[0] >= self._limit}
            for key, (src, rel) in started.items():
                n = strikes.get(key, (0, src, rel))[0] + 1
                strikes[key] = (n, src, rel)
                log.warning("%s/%r was being decoded when the daemon died (%d time%s in a row)%s", src, rel, n,
                            "" if n == 1 else "s", "; quarantined" if n >= self._limit else "")
        else:
            strikes = {k: v for k, v in strikes.items() if v[0] >= self._limit}  # a clean run forgives
        self._strikes = strikes
        self.quarantined = {k for k, (n, _, _) in strikes.items() if n >= self._limit}
        with self._lock:
            try:
                self._rewrite()
            except OSError as e:
                # The output is not writable (full, read-only): the writer reports and waits for that; the
                # journal is a safety net, so the daemon starts without it rather than not at all.
                log.warning("cannot write the in-flight journal %s (%s): running without it until the next start",
                            self.path, e.strerror or e)

    def _read(self) -> tuple[bool, dict[Key, tuple[str, str]], dict[Key, tuple[int, str, str]]]:
        started: dict[Key, tuple[str, str]] = {}
        strikes: dict[Key, tuple[int, str, str]] = {}
        clean = True  # no journal: a first start
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return clean, started, strikes
        except OSError as e:
            log.warning("cannot read the in-flight journal %s: %s", self.path, e.strerror or e)
            return clean, started, strikes
        for raw in lines:
            try:
                rec = json.loads(raw)
                key = tuple(rec["k"]) if "k" in rec else None
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line of a killed run
            op = rec.get("op")
            clean = op == "clean"
            if op == "start" and key is not None:
                started[key] = (rec.get("src", "?"), rec.get("rel", "?"))
            elif op == "done" and key is not None:
                started.pop(key, None)
                strikes.pop(key, None)
            elif op == "strike" and key is not None:
                strikes[key] = (int(rec.get("n", 1)), rec.get("src", "?"), rec.get("rel", "?"))
        return clean, started, strikes

    def _rewrite(self) -> None:
        """Replace the journal by what is still open: strikes and inputs started but not committed."""
        lines = [{"op": "strike", "k": list(k), "n": n, "src": s, "rel": r} for k, (n, s, r) in self._strikes.items()]
        lines += [{"op": "start", "k": list(k), "src": s, "rel": r} for k, (s, r) in self._open.items()]
        tmp = self.path.with_name(self.path.name + ".new")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(b"".join(_line(rec) for rec in lines))
            f.flush()
            os.fsync(f.fileno())  # rare (start, compaction): the strikes must not be lost with the old file
        os.replace(tmp, self.path)
        self._opened = True

    # -- each input -----------------------------------------------------------------------------------------
    def check(self, key: Key) -> None:
        """Raise ``InputError("crashed")`` for a quarantined input: it is not decoded again."""
        if key in self.quarantined:
            n, _, _ = self._strikes.get(key, (self._limit, "", ""))
            raise InputError("crashed", f"it was being decoded at {n} crashes of the daemon in a row, so it is "
                                        "not decoded again; to retry it, move it back into the inbox")

    def started(self, key: Key, source: str, rel: str) -> None:
        with self._lock:
            self._open[key] = (source, rel)
            self._append({"op": "start", "k": list(key), "src": source, "rel": rel})

    def committed(self, key: Key) -> None:
        with self._lock:
            self._open.pop(key, None)
            if self._strikes.pop(key, None) is not None:
                self.quarantined.discard(key)
            if self._append({"op": "done", "k": list(key)}) > self._compact_bytes:
                self._rewrite()

    def _append(self, rec: dict[str, Any]) -> int:
        """Append one line; the journal's size after it (0 if it could not be written).

        Opened for each line, not held open: a file open for writing would keep its file system from
        being remounted read-only, and an open and a close cost ~10 us beside a decode's milliseconds."""
        if not self._opened:
            return 0
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                os.write(fd, _line(rec))
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
        except OSError as e:  # a full or read-only disk: the journal is a safety net, the results matter more
            if not self._failing:
                log.warning("cannot write the in-flight journal %s: %s", self.path, e.strerror or e)
            self._failing = True
            return 0
        self._failing = False
        return size

    def close(self) -> None:
        """A clean exit: nothing in flight is held against any input at the next start."""
        with self._lock:
            self._append({"op": "clean"})
            self._opened = False


def _line(rec: dict[str, Any]) -> bytes:
    # ensure_ascii: a file name that is not UTF-8 (lone surrogates) still makes valid JSON
    return (json.dumps(rec, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")
