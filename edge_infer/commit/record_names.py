"""The names a group of records is filed under (sinks/filing.py chooses each), and the records
already there.

A record an input already has on disk from an earlier attempt is kept as it is: a record once
written never changes. Two ways to meet one, alike on disk: the daemon stopped (a crash, a power
cut) between an input's record and its move, so the next start finds both the input in the inbox
and its record; or a user moved a failed input back into the inbox to retry it, and it failed
again. An ``ok`` result for the same bytes is found before inference (a ``duplicate``); a failure
is known only once the input has failed again, so the writer meets its record at the name
``choose`` gives it and files the input under that record instead of writing a second one over
it. The new attempt's error is in the log.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from ..pipeline.jobs import FolderInput
from ..sinks.durable import read_json

log = logging.getLogger(__name__)


def name_group(jobs: list[FolderInput], file_name: Callable[[FolderInput, set[Path]], str],
               record_path: Callable[[FolderInput], Path]) -> list[FolderInput]:
    """Each job's ``stored_as`` (``file_name`` chooses it among the paths the group has not taken:
    two inputs of one name in a group never share one); the jobs whose records are to be written."""
    taken: set[Path] = set()
    for job in jobs:
        job.stored_as = job.stored_as or file_name(job, taken)
    return [job for job in jobs if not adopt(job, record_path(job))]


def adopt(job: FolderInput, path: Path) -> bool:
    """True when ``path`` (the record path chosen for ``job``) already holds a record of this input,
    these very bytes (or, unread, none): it is then the job's record, committed."""
    record = read_json(path)
    if record is None or (record.get("input"), record.get("input_sha256")) != (job.rel, job.sha256):
        return False
    job.record, job.committed = record, True
    log.info("%s/%r: its record from an earlier attempt stands, unchanged: %s",
             job.source, job.rel, path)
    return True
