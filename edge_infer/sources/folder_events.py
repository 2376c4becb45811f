"""What a folder source hears from its observer, and which names are not inputs (yet).

inotify (watchdog's observer with full move events) says when a file is complete: a write handle was closed
or a finished file was renamed, moved or linked in. Never ``modified``, which fires many times while a file
is written.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from watchdog.events import (DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileCreatedEvent, FileModifiedEvent,
                             FileMovedEvent, FileSystemEvent, FileSystemEventHandler)

from .claims import OWN_DIR
from .inotify import OverflowEvent

TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", "~")


def is_transient(rel: str) -> bool:
    """Names still being written by their producer: hidden anywhere in the path, or a temporary suffix."""
    parts = rel.split("/")
    return any(p.startswith(".") for p in parts) or parts[-1].endswith(TEMP_SUFFIXES)


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return True  # gone: nothing to do, and a regular file would be acted on at its close anyway


class Handler(FileSystemEventHandler):
    def __init__(self, source: Any) -> None:  # a FolderSource (which imports this module)
        self.source = source
        self._own = os.path.join(str(source.root), OWN_DIR)  # the daemon's own folder in the inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        if os.fsdecode(event.dest_path or event.src_path).startswith(self._own):
            return  # a claim or its acknowledgement (claims.py): ours, never an arrival; the cheapest check
        if isinstance(event, FileClosedEvent):
            self.source.candidate(src, settled=True)
        elif isinstance(event, FileMovedEvent) and event.dest_path:
            self.source.candidate(os.fsdecode(event.dest_path), settled=True, moved=True)
        elif isinstance(event, DirMovedEvent) and event.dest_path:
            self.source.scan(Path(os.fsdecode(event.dest_path)))  # a whole folder moved in
        elif isinstance(event, DirCreatedEvent):
            # Files written into a new folder before its inotify watch existed send no events of their own.
            self.source.scan(Path(src))
        elif isinstance(event, (FileCreatedEvent, FileModifiedEvent)) and self.source.polling:
            self.source.candidate(src, settled=False)  # polling sees no closes: wait for stillness
        elif isinstance(event, FileCreatedEvent):
            # A symlink or FIFO is never closed after writing; a file linked in (ln, linkat of an O_TMPFILE)
            # was written elsewhere and sends no close either: it settles (no writer holds it) on its own.
            self.source.candidate(src, settled=not _is_regular(src))

    def on_overflow(self, event: OverflowEvent) -> None:
        self.source.overflowed()
