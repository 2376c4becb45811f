"""Keeping a folder source watched whatever its folder does.

One ``FolderWatch`` per folder source owns watchdog's observer and a small thread
(``watch-<source>``) that, every ``CHECK_S``:
- looks at the folder itself: gone (deleted, renamed away, unmounted), it stops the observer and
  waits for it to come back (``edge_infer_watch_folder_missing``, one log line); back, or replaced
  by another folder of the same name, it watches the new one and rescans it. It never makes the
  folder: an unmounted disk's mount point must not fill up with photos meant for the disk.
- falls back to polling when inotify runs out of watches (``fs.inotify.max_user_watches``: one per
  folder) or instances, at start or later: the whole source is polled, with one error line naming
  the sysctl and ``edge_infer_watch_polling_fallback``, until the daemon restarts. Polling a tree
  costs a ``stat`` per entry each ``poll_interval_s`` (README, Guarantees): raising the limit is
  the real fix.
- runs the reconciliation scan every ``rescan_interval_s`` (rescan.py).

The supervisor sees it all through ``alive()`` and ``restart()`` (a dead observer, or this thread).
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from watchdog.events import (DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileCreatedEvent,
                             FileModifiedEvent, FileMovedEvent, FileSystemEvent,
                             FileSystemEventHandler)

from .inotify import LIMIT_ERRNOS, OverflowAwareObserver, OverflowEvent
from .rescan import Rescan, Watched

if TYPE_CHECKING:
    from ..ops.folder_metrics import FolderMetrics

log = logging.getLogger(__name__)
CHECK_S = 0.5  # how soon a vanished or replaced folder, or a fall-back to polling, is acted on
JOIN_S = 2.0  # an old observer's threads, when it is replaced
SYSCTLS = {"ENOSPC": "fs.inotify.max_user_watches", "EMFILE": "fs.inotify.max_user_instances"}


def _identity(path: Path) -> tuple[int, int] | None:
    """The folder at ``path`` now (symlinks followed: the configured path may be one), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _sysctl(name: str) -> str:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return "?"


class FolderWatch:
    """The observer of ``source``'s folder, kept watching (or waiting) until ``stop()``."""

    def __init__(self, source: Watched, handler: FileSystemEventHandler,
                 metrics: "FolderMetrics | None", transient: Callable[[str], bool]) -> None:
        self.source, self._handler, self._metrics = source, handler, metrics
        self.name, self.root = source.config.name, source.root
        self.rescan = Rescan(source, metrics, transient)
        self.mode = "starting"  # inotify | polling | waiting
        self._observer: Any = None
        self._watching: tuple[int, int] | None = None  # the folder the observer was started on
        self._exhausted: OSError | None = None  # inotify ran out: polled from then on
        self._lock = threading.RLock()  # one change of observer at a time (this thread, supervisor)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle (FolderSource.start/stop/join) --------------------------------------------------
    def start(self) -> None:
        """Watch (before the source's start-up scan: a file arriving in between is seen by one or
        both), remember what is there for the reconciliation scan, start the thread."""
        with self._lock:
            self._arm()
        self.rescan.seed()
        self._start_thread()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            if self._observer is not None:
                self._observer.stop()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        threads = (self._thread, self._observer)
        for t in threads:
            if t is not None and t.ident is not None:  # an observer whose start failed never ran
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t is not None and t.is_alive() for t in threads)

    # -- supervision -------------------------------------------------------------------------------
    def alive(self) -> bool:
        """This thread runs, and so does the observer, or it stopped because its folder went away
        or was replaced: this thread sees to that within CHECK_S, so no restart is spent on it."""
        if self._thread is None or not self._thread.is_alive():
            return False
        if not self._lock.acquire(blocking=False):
            return True  # its observer is being replaced right now
        try:
            o = self._observer
            if self.mode == "waiting":
                return True
            if o is not None and o.is_alive() and all(e.is_alive() for e in o.emitters):
                return True
            return _identity(self.root) != self._watching
        finally:
            self._lock.release()

    def restart(self) -> None:
        """After a death: watch again (or wait for the folder), and run this thread again if it
        was the one that died."""
        with self._lock:
            self._drop()
            self._arm()
        if self._thread is None or not self._thread.is_alive():
            self._start_thread()

    def break_observer(self) -> None:
        """Fault injection (tests): an entry the observer's dispatch cannot unpack kills it."""
        if self._observer is not None:
            self._observer.event_queue.put((None, None))

    # -- the thread --------------------------------------------------------------------------------
    def _main(self) -> None:
        period = self.source.config.rescan_interval_s
        try:
            next_rescan = time.monotonic() + period
            while not self._stop.is_set():
                self._wake.wait(CHECK_S)
                self._wake.clear()
                if self._stop.is_set():
                    return
                self.check()
                if time.monotonic() >= next_rescan and self.mode != "waiting":
                    next_rescan = time.monotonic() + period
                    if self.rescan.run() and self.mode == "inotify":
                        self._rewatch("a folder it could not list can be listed now")
        except BaseException:  # noqa: BLE001 - logged; alive() False: the supervisor restarts it
            log.exception("source %s: the watch thread died", self.name)

    def check(self) -> None:
        """The folder gone, back, replaced, or out of inotify watches: act on it."""
        now = _identity(self.root)
        if self.mode == "waiting":
            if now is not None:
                self._rewatch(f"its folder {self.root} is back")
                self._set_missing(self.mode == "waiting")
        elif now is None:
            with self._lock:
                self._drop()
                self.mode = "waiting"
            self._set_missing(True)
            log.warning("source %s: its folder %s is gone (deleted, renamed away or unmounted); "
                        "waiting for it to come back (looked for every %gs); what is dropped there "
                        "then is picked up", self.name, self.root, CHECK_S)
        elif now != self._watching:
            self._rewatch(f"its folder {self.root} was replaced by another")
        elif self._exhausted is not None and self.mode == "inotify":
            self._rewatch("inotify ran out of watches")

    def _rewatch(self, why: str) -> None:
        with self._lock:
            if self._stop.is_set():
                return
            self._drop()
            self._arm()
        if self.mode != "waiting":
            log.warning("source %s: %s; watching it again (%s); rescanned: %d file(s) there",
                        self.name, why, self.mode, self.source.scan())

    # -- observers ---------------------------------------------------------------------------------
    def _arm(self) -> None:
        """An observer on the folder as it is now: inotify, polling, or none while it is missing."""
        self._watching = _identity(self.root)
        if self._watching is None:
            self.mode = "waiting"
            return
        try:
            if self.source.config.polling or self._exhausted is not None:
                self._observer, self.mode = self._start(self._polling(), polling=True), "polling"
                return
            try:
                inotify = OverflowAwareObserver(self._out_of_watches)
                self._observer, self.mode = self._start(inotify, polling=False), "inotify"
            except OSError as e:
                if e.errno not in LIMIT_ERRNOS:
                    raise
                self._out_of_watches(e)
                self._observer, self.mode = self._start(self._polling(), polling=True), "polling"
        except (FileNotFoundError, NotADirectoryError):
            self.mode = "waiting"  # gone again meanwhile: the next check says so

    def _polling(self) -> Any:
        from watchdog.observers.polling import PollingObserverVFS

        # lstat, not stat: a symlink in the folder is an input, never followed (as under inotify).
        interval = self.source.config.poll_interval_s
        return PollingObserverVFS(os.lstat, os.scandir, polling_interval=interval)

    def _start(self, observer: Any, polling: bool) -> Any:
        # Only the events we act on: the kernel then does not even queue the opens, reads, modifies
        # and deletes (our own included) that make up most of a folder's traffic.
        wanted: list[type[FileSystemEvent]] = [FileMovedEvent, DirMovedEvent, DirCreatedEvent]
        if polling:
            wanted += [FileCreatedEvent, FileModifiedEvent]
        else:
            # Created: only to see symlinks and FIFOs arrive (recursive watches ask for it anyway).
            wanted += [FileClosedEvent, FileCreatedEvent, OverflowEvent]
        self.source.polling = polling  # no closes to wait for: complete once still (folder.py)
        try:
            observer.schedule(self._handler, str(self.root), recursive=self.source.config.recursive,
                              event_filter=wanted)
            observer.start()
        except BaseException:
            observer.stop()  # what it started already (watchdog's inotify reader thread)
            raise
        return observer

    def _drop(self) -> None:
        o, self._observer = self._observer, None
        if o is not None:
            o.stop()
            if o.ident is not None:
                o.join(JOIN_S)

    def _out_of_watches(self, e: OSError) -> None:
        """inotify cannot watch the whole tree: said once; this thread switches to polling (at
        start, ``_arm`` at once). Called from watchdog's reader thread: it only takes note."""
        if self._exhausted is not None:
            return
        self._exhausted = e
        sysctl = SYSCTLS[errno.errorcode.get(e.errno or 0, "ENOSPC")]
        if self._metrics is not None:
            self._metrics.polling_fallback.labels(self.name).set(1)
        log.error("source %s: inotify ran out (%s = %s; it needs one watch per folder of %s, and "
                  "the same user's other programs count too): polling the whole source every %gs "
                  "instead, until the daemon restarts. Raise it (sysctl -w %s=N, and in "
                  "/etc/sysctl.d/) and restart edge-infer", self.name, sysctl, _sysctl(sysctl),
                  self.root, self.source.config.poll_interval_s, sysctl)
        self._wake.set()

    def _set_missing(self, missing: bool) -> None:
        if self._metrics is not None:
            self._metrics.folder_missing.labels(self.name).set(int(missing))
