"""watchdog's inotify observer, made to report a kernel queue overflow as an event of its own.

When more events arrive than ``fs.inotify.max_queued_events`` (16384 by default) before they are read,
the kernel drops the rest and queues one IN_Q_OVERFLOW. watchdog (7.1) then rebuilds its watches but
emits nothing, so files whose events were dropped would never be seen. ``OverflowEvent`` carries the
overflow to the handler, in order with the other events, and the folder source rescans its tree.

This hooks watchdog internals (``InotifyWatchGroup.on_queue_overflow``, the observer's emitter class),
hence the pin to watchdog 7.x in pyproject.toml; tests/faults/test_overflow.py fails if the hook breaks.
"""
from __future__ import annotations

import os

from watchdog.events import FileSystemEvent
from watchdog.observers.inotify import InotifyFullEmitter, InotifyObserver, InotifyWatchGroup


class OverflowEvent(FileSystemEvent):
    """The kernel dropped events under ``src_path``: anything may have happened there."""

    event_type = "overflow"


class _WatchGroup(InotifyWatchGroup):
    emitter: "_Emitter | None" = None

    def on_queue_overflow(self) -> None:
        super().on_queue_overflow()
        if self.emitter is not None:
            self.emitter.queue_event(OverflowEvent(self.emitter.watch.path))


class _Emitter(InotifyFullEmitter):
    def on_thread_start(self) -> None:
        # watchdog's own on_thread_start, building our watch group instead of its own.
        group = _WatchGroup(self._inotify_fd, os.fsencode(self.watch.path), is_recursive=self.watch.is_recursive,
                            event_mask=self.get_event_mask_from_filter(), follow_symlink=self.watch.follow_symlink)
        group.emitter = self
        self._inotify = group


class OverflowAwareObserver(InotifyObserver):
    """``InotifyObserver(generate_full_events=True)`` that also emits ``OverflowEvent``."""

    def __init__(self) -> None:
        super().__init__(generate_full_events=True)
        self._emitter_class = _Emitter
