"""Folder source: files dropped into a folder become jobs once complete, each exactly once.

inotify (watchdog's InotifyObserver with full move events) tells us when a file is complete: a write
handle was closed (``closed``) or a finished file was renamed or moved in (``moved``). We never act on
``modified``, which fires many times while a file is written. Files found by a scan (start-up, a folder
moved in, a rescan after the kernel's event queue overflowed) have sent no such event: they are complete
once no process holds them open for writing (a file lease tells, see leases.py), or, where the kernel
cannot say, once their size and mtime have been still for ``settle_s``. The polling observer (network
mounts, whose remote writers no local check can see) always waits for ``settle_s``.

Each input is claimed as it is handed over (claims.py): renamed into the inbox's own hidden folder, so
that what is acknowledged is the file that was read, whatever its path names by then.

Symbolic links, FIFOs, sockets and devices are inputs too: they are never followed or opened for reading,
and end in the failed folder (the worker refuses them), so nothing lands in the inbox without a record.
"""
from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from pathlib import Path

from ..config import FolderSourceConfig
from ..lifecycle import Stage
from ..pipeline.jobs import FolderInput
from ..pipeline.context import StageContext
from ..sinks.durable import make_dirs
from .claims import QUIET_S, Claims
from .folder_events import Handler, is_transient
from .leases import held_open_for_writing
from .watch import FolderWatch

log = logging.getLogger(__name__)


class FolderSource(Stage):
    """Watches ``config.path`` and puts ``FolderInput`` objects on ``jobs`` (blocking: a full
    queue is backpressure)."""

    kind = "source"

    def __init__(self, ctx: StageContext, *, config: FolderSourceConfig) -> None:
        state, metrics, parked = ctx.state, ctx.metrics, ctx.parked
        super().__init__(f"source-{config.name}")
        self.config = config
        self.root = Path(config.path)
        self.polling = config.polling
        self._jobs = ctx.jobs
        self._lock = threading.Lock()
        self._ready: dict[str, tuple[str, float]] = {}  # abs path -> (rel, detected_at), in arrival order
        # Taken (claimed, see claims.py) and waiting for room in the job queue, before anything ready.
        self._held: dict[str, tuple[str, float]] = {}
        self._claims = Claims(self.root) if config.after != "keep" else None  # keep: never moved
        self._moved_in: set[str] = set()  # ready files that were renamed in (no quiet period)
        self._claim_at: float | None = None  # when the first ready file is quiet enough to claim
        self._settling: dict[str, tuple[int, float, float]] = {}  # abs path -> (size, mtime, still since)
        self._in_flight: set[str] = set()
        # The observer, kept watching whatever the folder does; the reconciliation scan (watch.py).
        folders = metrics.folders if metrics is not None else None
        self.watch = FolderWatch(self, Handler(self), folders, transient=is_transient)
        self._wake = threading.Event()  # set when a file becomes ready: dispatch at once, not at the next tick
        self._dispatching = threading.Lock()  # one thread at a time hands ready files over, in arrival order
        self.armed = threading.Event()
        self._state = state  # counts each input handed over as in flight (None: not counted)
        self._metrics = metrics
        self._parked = parked  # inputs with their record that cannot be moved: skipped until they change

    # -- detection ------------------------------------------------------------------------------------------
    def candidate(self, path: str, settled: bool, moved: bool = False) -> None:
        """``moved``: renamed or moved in, finished by its producer (claimed at once; others wait QUIET_S)."""
        rel = self._rel(path)
        if rel is None or is_transient(rel) or (self._parked is not None and self._parked.skip(path)):
            return
        with self._lock:
            if path in self._in_flight or path in self._ready or path in self._held:
                return
            if not settled:
                if path not in self._settling:
                    self._settling[path] = (-1, -1.0, time.monotonic())
                return
            self._settling.pop(path, None)
            if not os.path.lexists(path):
                # A late or repeated event (watchdog also reports the files of a new folder it walks) for an
                # input already done: done() comes after the move, so a file not in flight and not here
                # is finished. Offering it would fail it as vanished.
                return
            self._ready[path] = (rel, time.time())
            if moved:
                self._moved_in.add(path)
            self._wake.set()  # this stage's thread takes over whatever the hand-over below leaves
        # Handed over on the calling (observer) thread: a lone photo skips one thread wake-up on its way.
        self._dispatch(block=False)

    def scan(self, folder: Path | None = None) -> int:
        """Every file already present (start-up, a folder moved in, a rescan) becomes a candidate."""
        if folder is not None and folder.is_symlink():
            # watchdog reports a new symlink to a folder as a created folder; os.walk would follow it out.
            self.candidate(str(folder), settled=True)
            return 1
        n = 0
        unlistable = self.watch.rescan.cannot_list  # named once, counted, tried again (rescan.py)
        for dirpath, dirnames, filenames in os.walk(folder or self.root, onerror=unlistable):
            # os.walk lists a symlink to a folder among the folders but never follows it: it is an input.
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in links] \
                if self.config.recursive else []
            for f in (*filenames, *links):
                self.candidate(os.path.join(dirpath, f), settled=False)
                n += 1
        return n

    def overflowed(self) -> None:
        """The kernel dropped events: rescan everything (files already known are not offered twice)."""
        if self._metrics is not None:
            self._metrics.watch_overflowed(self.config.name)
        n = self.scan()
        log.warning("source %s: the inotify event queue overflowed (fs.inotify.max_queued_events); rescanned "
                    "%s: %d file(s) there", self.config.name, self.root, n)

    def known(self, path: str) -> bool:
        """Told about already (ready, settling, in flight, parked): a reconciliation scan that finds
        it has found nothing new (rescan.py)."""
        with self._lock:
            if path in self._ready or path in self._settling or path in self._in_flight or path in self._held:
                return True
        return self._parked is not None and self._parked.skip(path)

    def _rel(self, path: str) -> str | None:
        try:
            rel = Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return None  # moved out of the folder, or outside it altogether
        if not self.config.recursive and "/" in rel:
            return None
        return rel

    def _settle(self) -> None:
        now = time.monotonic()
        with self._lock:
            items = list(self._settling.items())
        for path, (size, mtime, since) in items:
            try:
                st = os.lstat(path)
            except OSError:
                st = None  # gone before it settled: nothing to do
            writer: bool | None = None
            if st is not None and stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (size, mtime):
                writer = held_open_for_writing(path)
            with self._lock:
                if path not in self._settling:
                    continue
                if st is None or stat.S_ISDIR(st.st_mode):
                    del self._settling[path]
                elif not stat.S_ISREG(st.st_mode):
                    del self._settling[path]
                    self._ready[path] = (self._rel(path) or "", time.time())  # refused by the worker
                elif (st.st_size, st.st_mtime_ns) != (size, mtime) or writer:
                    self._settling[path] = (st.st_size, st.st_mtime_ns, now)  # still being written
                elif (writer is False and not self.polling) or now - since >= self.config.settle_s:
                    del self._settling[path]
                    self._ready[path] = (self._rel(path) or "", time.time())

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        make_dirs(self.root)  # durably: a producer's synced arrival must not vanish with an unsynced folder
        if self._claims is not None:
            self._claims.prepare()
            self._finish_claims()
        self.watch.start()  # before the scan: a file arriving in between is seen by one or both
        found = self.scan()
        log.info("source %s: watching %s (%s), %d file(s) already there", self.config.name, self.root,
                 self.watch.mode, found)
        super().start()
        self.armed.set()

    def _finish_claims(self) -> None:
        """Claims an earlier run left (it stopped, crashed or lost power with them in flight) come first."""
        assert self._claims is not None
        left = [(p, rel) for p, rel in self._claims.left() if self._parked is None or not self._parked.skip(p)]
        with self._lock:
            for path, rel in left:
                self._held[path] = (rel, time.time())
        if left:
            log.info("source %s: %d input(s) claimed by an earlier run are finished first", self.config.name,
                     len(left))

    # -- supervision (see ops/supervisor.py) -------------------------------------------------------------------
    def observer_alive(self) -> bool:
        """watchdog's observer and its emitters, and the thread keeping them watching (watch.py)."""
        return self.watch.alive()

    def restart_observer(self) -> None:
        """After the observer died: watch again, then rescan for whatever arrived while nobody watched."""
        self.watch.restart()
        log.warning("source %s: watching %s again; rescanned: %d file(s) there", self.config.name, self.root,
                    self.scan())

    def break_observer(self) -> None:
        """Fault injection (tests): an entry the observer's dispatch cannot unpack kills its thread."""
        self.watch.break_observer()

    def give_back(self, job: FolderInput) -> bool:
        """A job lost with a stage that died: no longer in flight, offered again; False if acknowledged."""
        path = str(job.path)
        with self._lock:
            if path not in self._in_flight:
                return False
            self._in_flight.discard(path)
            self._held[path] = (job.rel, job.detected_at)  # taken already: offered again as it is
        if self._state is not None:
            self._state.in_flight.add(-1)
        self._wake.set()
        return True

    def run(self) -> None:
        while self.should_keep_running():
            self._wake.clear()
            self._settle()
            self._dispatch()
            self._release_claims()
            timeout = 0.05 if self._settling else self.poll_s
            if self._claim_at is not None:
                timeout = min(timeout, max(0.0, self._claim_at - time.monotonic()))
                self._claim_at = None
            self._wake.wait(timeout)

    def _release_claims(self) -> None:
        if self._claims is not None:
            with self._lock:
                self._claims.idle(bool(self._ready or self._held or self._in_flight or self._settling))

    def _dispatch(self, block: bool = True) -> None:
        """Ready files to the workers. ``block=False`` (the observer thread) never waits: when another
        thread is dispatching or the queue is full, the files stay ready for this stage's thread."""
        if not self._dispatching.acquire(block, self.poll_s if block else -1):
            return
        try:
            while self.should_keep_running():
                with self._lock:
                    taken = self._take()
                    if taken is None:
                        return
                    path, (rel, detected) = taken
                job = FolderInput(source=self.config.name, rel=rel, path=Path(path),
                                  detected_at=detected)
                try:
                    self._jobs.put(job, block, self.poll_s)
                except queue.Full:
                    if not block:
                        return
                    continue  # backpressure: the input stays taken and is offered again; stop is checked
                with self._lock:
                    self._held.pop(path, None)
                    self._in_flight.add(path)
                if self._state is not None:
                    self._state.in_flight.add(1)
        finally:
            self._dispatching.release()

    def _take(self) -> tuple[str, tuple[str, float]] | None:
        """The next input, claimed (under ``_lock``: an event for its path that comes after the claim is a
        new file's, and must find the path free); None when nothing is ready."""
        while not self._held and self._ready:
            path, (rel, detected) = next(iter(self._ready.items()))
            if self._claims is not None and path not in self._moved_in:
                wait = self._claims.wait_for_quiet(path, QUIET_S)
                if wait > 0:  # written in place a moment ago: its producer may not be done with it
                    self._claim_at = time.monotonic() + wait
                    break
            self._moved_in.discard(path)
            del self._ready[path]
            taken = self._claims.claim(path, rel) if self._claims is not None else path
            if taken is not None:  # None: nothing there any more (its new name, if any, is seen anew)
                self._held[taken] = (rel, detected)
        return next(iter(self._held.items()), None)

    def done(self, job: FolderInput) -> None:
        """The job is acknowledged (result durable, input moved/deleted/kept): forget it."""
        with self._lock:
            self._in_flight.discard(str(job.path))
            if not self._in_flight:
                self._wake.set()  # the claim folder may go once idle: time it from now

    def stop(self) -> None:
        super().stop()
        self._wake.set()
        self.watch.stop()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        ok = self.watch.join(timeout)
        return super().join(max(0.0, deadline - time.monotonic())) and ok

    def healthy(self) -> bool:
        return super().healthy() and self.watch.alive()
