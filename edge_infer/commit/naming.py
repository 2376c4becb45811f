"""Where a folder input's record and the input itself go: its route (after, done_dir, failed_dir),
the record's path, a name that holds nothing else, and the class folder it is sorted into."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..pipeline.jobs import FolderInput
from ..sinks.durable import TMP_DIR, error_path, read_json, result_path
from ..sinks.filing import UNSURE, choose, sorted_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceRoute:
    """Where a folder source's outputs and inputs go."""

    after: str  # move | delete | keep
    done_dir: Path | None  # may hold {label}: a folder per top-1 label (see Naming.done_dir)
    failed_dir: Path
    on_done: Callable[[FolderInput], None]
    inbox: Path | None = None  # the watched folder: the store's too (see fs_errors.store_problem)
    min_score: float = 0.0  # with {label}: a lower top-1 score files the input under ``unsure``


class Naming:
    """The paths of one daemon's records and acknowledged inputs. ``routes`` is shared, not
    copied: a route replaced in it (tests do) is the one used."""

    def __init__(self, output_dir: Path, routes: dict[str, SourceRoute]) -> None:
        self.output_dir, self.routes = output_dir, routes

    def record_path(self, job: FolderInput, name: str | None = None) -> Path:
        name = name or job.stored_as or job.rel
        if job.error is not None:
            return error_path(self.routes[job.source].failed_dir, name)
        return result_path(self.output_dir, job.source, name)

    def record_roots(self, job: FolderInput) -> tuple[Path, Path]:
        """The store's folders a record is written through: its temporary folder and its root."""
        if job.error is not None:
            failed = self.routes[job.source].failed_dir
            return failed / TMP_DIR, failed
        return self.output_dir / TMP_DIR, self.output_dir / job.source

    def record_root(self, job: FolderInput) -> Path:
        """The folder holding the temporary files a record is written through."""
        return self.routes[job.source].failed_dir if job.error is not None else self.output_dir

    def file_name(self, job: FolderInput, taken: set[Path]) -> str:
        """A name that holds nothing else for the job's record and input (sinks/filing.py)."""
        route = self.routes[job.source]
        dest_dir = (route.failed_dir if job.error
                    else self.done_dir(job) if route.after == "move" else None)
        return choose(job.rel, job.sha256, lambda name: self.record_path(job, name), job.path,
                      dest_dir, job.error.kind if job.error is not None else None, taken)

    def done_dir(self, job: FolderInput) -> Path | None:
        """Where an ok input is moved: the source's done_dir, its ``{label}`` filled in from the
        top-1 prediction (``unsure`` below min_score). A duplicate, or an input acknowledged after a
        restart, has no predictions in hand: its record on disk has them, so it joins the earlier
        copy's folder."""
        route = self.routes[job.source]
        if route.done_dir is None or "{label}" not in str(route.done_dir):
            return route.done_dir
        predictions = job.predictions
        if predictions is None:
            record = job.record if job.record is not None else read_json(self.record_path(job))
            predictions = (record or {}).get("predictions")
        if not predictions:
            log.warning("%s/%r: no predictions found to sort it by; filed under %s", job.source,
                        job.rel, UNSURE)
            return sorted_dir(route.done_dir, UNSURE)
        top = predictions[0]
        unsure = float(top.get("score", 0.0)) < route.min_score
        return sorted_dir(route.done_dir, UNSURE if unsure else str(top.get("label", UNSURE)))
