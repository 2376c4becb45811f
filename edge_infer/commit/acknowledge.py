"""A folder input's acknowledgement, once its record is on disk: moved (into done_dir, a class
folder of it, or failed_dir), deleted, or kept; an error of this input alone parks it
(parked.py)."""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import sorting_root
from ..pipeline.input_file import still_there
from ..pipeline.jobs import FolderInput
from ..sinks.filing import file_input
from .ack_sync import AckSync
from .fs_errors import describe, raise_unless_own
from .naming import Naming, SourceRoute
from .parked import ParkedInputs

log = logging.getLogger(__name__)


class Acknowledger:
    def __init__(self, naming: Naming, parked: ParkedInputs) -> None:
        self._naming, self._parked = naming, parked
        self._acks = AckSync()  # the acknowledgements' folders, synced at most once a second

    def acknowledge(self, job: FolderInput) -> None:
        """The store's errors are raised as they are (the caller holds the job); an error of this
        input alone parks it (raising ``Parked``)."""
        route = self._naming.routes[job.source]
        move = job.error is None and route.after == "move"
        done_dir = self._naming.done_dir(job) if move else None
        try:
            if job.error is not None:
                self._acknowledge(job, route, route.failed_dir, force_move=True)
            else:
                self._acknowledge(job, route, done_dir)
        except OSError as e:
            # The store's own folder is the one holding the class folders: a class folder that
            # cannot be made (a file in its place) is the input's problem, as a blocked sub-folder
            # is.
            if job.error is not None:
                dest: Path | None = route.failed_dir
            elif done_dir is not None and route.done_dir is not None:
                dest = sorting_root(route.done_dir)
            else:
                dest = None
            raise_unless_own(e, [r for r in (route.inbox, dest) if r is not None])
            how = "delete" if dest is None else "move"
            raise self._parked.park(job, f"cannot {how} it: {describe(e)}", True)

    def flush(self, force: bool = False) -> None:
        """The acknowledgements' folders synced (at most once a second, unless ``force``)."""
        self._acks.flush(force=force)

    def _acknowledge(self, job: FolderInput, route: SourceRoute, dest_dir: Path | None,
                     force_move: bool = False) -> None:
        if not still_there(job.path, job.identity):  # processed in place, replaced since read
            log.info("%s/%s was replaced by a newer file since it was read: its record stands, the "
                     "newer file is a new input", job.source, job.rel)
            return
        try:
            if force_move or route.after == "move":
                assert dest_dir is not None
                name = job.stored_as or job.rel
                moved = file_input(job.path, dest_dir, name, job.rel, job.sha256)
                self._acks.acknowledged(job.path, moved)
            elif route.after == "delete":
                job.path.unlink()
                self._acks.acknowledged(job.path, None)
        except FileNotFoundError:
            log.info("%s/%s was gone before it could be acknowledged", job.source, job.rel)
