"""The reconciliation scan: events are hints, the folder is the truth.

Every ``rescan_interval_s`` (60 s by default) the whole folder is listed, as ``find`` would: one
directory read per folder and one ``lstat`` per entry, no file opened, hidden names (producers'
temporary files, the daemon's own ``.edge-infer``) skipped. A file the source was not told about
(not ready, settling, in flight or parked), not seen by the previous scan, and older by its ctime
(which a rename or a link sets too) than its event could still take to arrive, was missed: it is
offered and counted (``edge_infer_watch_missed_total``), so a lost event shows up as a metric, never
as a photo waiting forever. What inotify cannot see (a file system mounted inside the inbox, a
folder it could not watch, an event the kernel dropped) is found this way. The cost follows the
folder's size: each file's identity is remembered until the next scan only, so that a file is
judged once.

Folders it may not list (permissions) are named once in the log, counted
(``edge_infer_watch_unlistable_folders``) and tried again at each scan; once listable, their files
are offered (and counted: no event ever reported them).
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

if TYPE_CHECKING:
    from ..ops.folder_metrics import FolderMetrics

log = logging.getLogger(__name__)
GRACE_S = 5.0  # a file younger than this may have its event still queued: the next scan judges it
Key = tuple[int, int, int]  # device, inode, ctime: a file replaced at the same name is another file


class Watched(Protocol):
    """What watch.py and this module use of a folder source (folder.py's FolderSource)."""

    config: Any  # config.FolderSourceConfig
    root: Path
    polling: bool  # set by watch.py: True while an observer polls

    def scan(self, folder: Path | None = None) -> int: ...
    def candidate(self, path: str, settled: bool) -> None: ...
    def known(self, path: str) -> bool: ...


class Rescan:
    """The reconciliation scans of one folder source, and the folders it cannot list."""

    def __init__(self, source: Watched, metrics: "FolderMetrics | None",
                 transient: Callable[[str], bool]) -> None:
        self.source, self._metrics, self._transient = source, metrics, transient
        self.name = source.config.name
        self._seen: dict[str, Key] = {}
        self._unlistable: dict[str, str] = {}  # folder -> why, as logged
        self._lock = threading.Lock()

    def seed(self) -> None:
        """At start, before the source's start-up scan offers everything present: what is there now
        is that scan's, so that the first periodic scan counts only what came later."""
        self._seen = {path: _key(st) for path, st in self._walk(set())}

    def run(self) -> bool:
        """One scan; True when a folder it could not list before can be listed now."""
        cfg = self.source.config
        grace = GRACE_S + (cfg.poll_interval_s + cfg.settle_s if self.source.polling else 0.0)
        hidden = tuple(f + os.sep for f in self._unlistable)  # no event ever came from in there
        listed: set[str] = set()
        seen: dict[str, Key] = {}
        found: list[str] = []
        now = time.time()
        for path, st in self._walk(listed):
            rel = os.path.relpath(path, self.source.root)
            if self._transient(rel) or self.source.known(path):
                continue
            key, before = _key(st), self._seen.get(path)
            if before != key and now - st.st_ctime < grace and not path.startswith(hidden):
                continue  # its event may still be on its way: the next scan judges it
            seen[path] = key
            if before != key:
                found.append(rel)
                self.source.candidate(path, settled=False)
        self._seen = seen
        self._counted(found)
        return self._listable_again(listed)

    def _counted(self, found: list[str]) -> None:
        # With after: keep, an input acknowledged since the previous scan is still there and no
        # longer known: offered again (a duplicate), not counted: it looks like a missed one.
        if self._metrics is not None:
            self._metrics.rescans_total.labels(self.name).inc()
            if self.source.config.after != "keep":
                self._metrics.missed_total.labels(self.name).inc(len(found))
        if found:
            log.warning("source %s: the reconciliation scan found %d file(s) no event had reported "
                        "(%s%s); offered now", self.name, len(found), found[0],
                        ", ..." if len(found) > 1 else "")

    def _walk(self, listed: set[str]) -> Iterator[tuple[str, os.stat_result]]:
        """Every entry that is not a folder (symlinks included, never followed), hidden names
        skipped; ``listed`` gets every folder read."""
        stack = [str(self.source.root)]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError as e:
                self.cannot_list(e)
                continue
            listed.add(folder)
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if self.source.config.recursive:
                        stack.append(entry.path)
                    continue
                try:
                    yield entry.path, entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile

    def cannot_list(self, e: OSError) -> None:
        """A folder that could not be listed (also ``os.walk``'s onerror): named once, counted."""
        if e.errno in (errno.ENOENT, errno.ENOTDIR) or e.filename is None:
            return  # gone meanwhile: nothing waits there
        folder = os.fsdecode(e.filename)
        with self._lock:
            if folder in self._unlistable:
                return
            self._unlistable[folder] = e.strerror or str(e)
            self._count()
        log.error("source %s: cannot list %s (%s): the files in it wait, unseen; tried again at "
                  "each reconciliation scan (every %gs). Let the daemon's user read and enter it "
                  "(r-x), or move it out of the inbox", self.name, folder, e.strerror,
                  self.source.config.rescan_interval_s)

    def _listable_again(self, listed: set[str]) -> bool:
        with self._lock:
            back = [f for f in self._unlistable if f in listed or not os.path.lexists(f)]
            for f in back:
                del self._unlistable[f]
            self._count()
        for f in back:
            if f in listed:
                log.warning("source %s: can list %s now; its files are offered", self.name, f)
        return any(f in listed for f in back)

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.unlistable.labels(self.name).set(len(self._unlistable))


def _key(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_ctime_ns)
