"""watchdog's inotify observer, made to report a kernel queue overflow and running out of watches.

When more events arrive than ``fs.inotify.max_queued_events`` (16384 by default) before they are read,
the kernel drops the rest and queues one IN_Q_OVERFLOW. watchdog (7.1) then rebuilds its watches but
emits nothing, so files whose events were dropped would never be seen. ``OverflowEvent`` carries the
overflow to the handler, in order with the other events, and the folder source rescans its tree.

When a folder made while it runs cannot be watched (``fs.inotify.max_user_watches`` reached: one
watch per folder), watchdog logs a warning and leaves that folder, and every later one, unwatched.
``on_watch_limit`` is told instead, once, and the group stops trying (each further folder would
fail, and log, the same way); the source falls back to polling (watch.py). At start the error
reaches ``start()`` instead.

This hooks watchdog internals (``InotifyWatchGroup.on_queue_overflow`` and ``_add_callback``, the
observer's emitter class), hence the pin to watchdog 7.x in pyproject.toml;
tests/faults/test_overflow.py and tests/faults/test_watch_limits.py fail if the hooks break.
"""
from __future__ import annotations

import errno
import functools
import os
from typing import Any, Callable

from watchdog.events import FileSystemEvent
from watchdog.observers.inotify import InotifyFullEmitter, InotifyObserver, InotifyWatchGroup

from .claims import OWN_DIR

LIMIT_ERRNOS = (errno.ENOSPC, errno.EMFILE)  # out of watches, out of inotify instances
WatchLimit = Callable[[OSError], None]


class OverflowEvent(FileSystemEvent):
    """The kernel dropped events under ``src_path``: anything may have happened there."""

    event_type = "overflow"


class _Limits:
    """The shared inotify reader as one watch group sees it: running out of watches is reported."""

    def __init__(self, fd: Any, report: WatchLimit) -> None:
        self._fd, self._report = fd, report

    def add_callback(self, *args: Any) -> Any:
        try:
            return self._fd.add_callback(*args)
        except OSError as e:
            if e.errno in LIMIT_ERRNOS:
                self._report(e)
            raise

    def remove_callbacks(self, callbacks: Any) -> None:
        self._fd.remove_callbacks(callbacks)


class _WatchGroup(InotifyWatchGroup):
    emitter: "_Emitter | None" = None
    exhausted = False

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        if self.emitter is not None:
            self.emitter.queue_event(OverflowEvent(self.emitter.watch.path))

    def on_event(self, event: Any) -> None:
        # A file moved out of a watched folder (an acknowledgement, a claim, someone's mv) is never an
        # arrival, and watchdog holds each unpaired IN_MOVED_FROM for 0.5 s at the head of its queue,
        # waiting for its pair: every event behind it waited too (light-load latency 324 ms against
        # 23 ms, measured). Dropped; a file renamed within the inbox arrives by its IN_MOVED_TO alone.
        # Folders keep theirs: watchdog moves its watches by them.
        if event.is_moved_from and not event.is_directory:
            return
        super().on_event(event)

    def _add_callback(self, path: bytes) -> None:
        # Not the daemon's own folder in the inbox (claims.py): its claims are no arrivals, and a watch
        # there would cost one more watch and two events in Python per input.
        if not self.exhausted and os.fsencode(OWN_DIR) not in path.split(b"/"):
            super()._add_callback(path)


class _Emitter(InotifyFullEmitter):
    def __init__(self, *args: Any, on_watch_limit: WatchLimit, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_watch_limit = on_watch_limit

    def on_thread_start(self) -> None:
        # watchdog's own on_thread_start, building our watch group instead of its own.
        group: _WatchGroup | None = None

        def report(e: OSError) -> None:
            if group is not None and group.is_active and not group.exhausted:
                group.exhausted = True  # while starting, the error reaches start() instead
                self._on_watch_limit(e)

        fd: Any = _Limits(self._inotify_fd, report)
        group = _WatchGroup(fd, os.fsencode(self.watch.path), is_recursive=self.watch.is_recursive,
                            event_mask=self.get_event_mask_from_filter(),
                            follow_symlink=self.watch.follow_symlink)
        group.emitter = self
        self._inotify = group


class OverflowAwareObserver(InotifyObserver):
    """``InotifyObserver(generate_full_events=True)`` that also emits ``OverflowEvent`` and calls
    ``on_watch_limit`` (from watchdog's reader thread: it must only take note) when a folder made
    while it runs cannot be watched."""

    def __init__(self, on_watch_limit: WatchLimit = lambda e: None) -> None:
        super().__init__(generate_full_events=True)
        emitter: Any = functools.partial(_Emitter, on_watch_limit=on_watch_limit)
        self._emitter_class = emitter
