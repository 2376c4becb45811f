"""Folder inputs' records made durable: in groups under load (group commit), and one job's own
record with what each way of failing it leads to (a failure record saying why, or the input parked
without one)."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from ..errors import InputError
from ..pipeline.jobs import FolderInput
from ..pipeline.outcomes import job_record
from ..pipeline.state import PipelineState
from ..sinks.durable import write_json_group
from ..sinks.filing import drop_interrupted_failure
from .fs_errors import describe, raise_unless_own
from .naming import Naming
from .parked import ParkedInputs
from .record_names import name_group

log = logging.getLogger(__name__)
SYNC_THREADS = 4  # a group's fdatasyncs in flight at once (bench/commit_latency.py: "fdatasync-t")


class RecordWrites:
    def __init__(self, naming: Naming, state: PipelineState, parked: ParkedInputs) -> None:
        self._naming, self._state, self._parked = naming, state, parked
        self._sync_pool: ThreadPoolExecutor | None = None  # group commit's fdatasyncs, while open

    def open(self) -> None:
        self._sync_pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="writer-sync")

    def close(self) -> None:
        if self._sync_pool is not None:  # idle: each group waits for its syncs
            self._sync_pool.shutdown(wait=False, cancel_futures=True)
        self._sync_pool = None

    def write(self, jobs: list[FolderInput]) -> None:
        """Commit the result or failure record of each folder job, durably, as one group."""
        naming = self._naming
        jobs = name_group(jobs, naming.file_name, naming.record_path)  # (those found are kept)
        serving = self._state.model_ref()
        records = [(naming.record_path(job), job_record(job, serving, job.sha256, job.stored_as),
                    naming.record_root(job)) for job in jobs]
        write_json_group(records, self._sync_pool)
        for job, (_, obj, _) in zip(jobs, records):
            job.record, job.committed = obj, True
            if job.error is None and job.sha256:
                failed_dir = naming.routes[job.source].failed_dir
                drop_interrupted_failure(failed_dir, job.rel, job.sha256)

    def group(self, group: list[FolderInput]) -> None:
        """Group commit: under load, the records of every job waiting are made durable together.

        Each durable record costs two syncs (its data, then its rename), ~1-3 ms on this VM's disk
        and more on an SD card, in the one writer thread: one result at a time, the writer would
        bound throughput. Together, their syncs overlap on a few threads, each folder synced once;
        never the whole file system. A failure here changes nothing: each job's commit then writes
        its own record, with the retry and the blocked-output report that go with it.
        """
        jobs = [j for j in group if not j.committed]
        if len(jobs) < 2:
            return
        try:
            self.write(jobs)
        except OSError:
            return

    def own(self, job: FolderInput) -> None:
        """The job's record; a result that cannot be written for reasons of its own becomes a
        failure record saying why, and an input that cannot get even that is parked without one
        (raising ``Parked``). The store's errors are raised as they are."""
        roots = self._naming.record_roots(job)
        try:
            self.write([job])
        except OSError as e:
            raise_unless_own(e, roots)
            if job.committed:  # written; only the stale failure record of an earlier attempt stays
                log.warning("%s/%r: cannot remove its earlier failure record: %s", job.source,
                            job.rel, describe(e))
                return
            what = "failure record" if job.error else "result"
            why = f"cannot write its {what} {self._naming.record_path(job)}: {describe(e)}"
            if job.error is not None:
                raise self._parked.park(job, why, False)
            job.error, job.stored_as = InputError("io", why), None  # filed anew, in failed/
            try:
                self.write([job])
            except OSError as e2:
                raise_unless_own(e2, self._naming.record_roots(job))
                job.error = job.stored_as = None  # a retry starts again from its result
                raise self._parked.park(job, f"{why}; nor its failure record: {describe(e2)}",
                                        False)
        if job.error is not None:
            log.warning("%s/%r failed (%s): %s", job.source, job.rel, job.error.kind,
                        job.error.message)
