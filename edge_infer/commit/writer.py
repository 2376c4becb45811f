"""The writer: commit each folder input's result durably, then acknowledge its input (move / delete / keep).
Camera frames never come here: the regions stage (regions/stage.py) has them.

The order is the exactly-once guarantee: an input leaves the inbox only after its result (or its error
record) is on disk, and a restart that finds the result for the same bytes acknowledges without redoing.
A disk that refuses writes (full, read-only, folder gone) blocks the writer, never fails an input: the job
is retried with backoff, the pipeline backs up to the inbox, and the block is reported (metric, log, STATUS=,
/readyz) until it clears by itself. So does a machine short of descriptors or memory, for as long as it is.
An error of one input alone (see fs_errors.py) never holds the others: at its result it fails that input
(one failure record saying why), at its acknowledgement it parks it (see parked.py).

Longer than 300 lines: one input's commit (record, spool, acknowledgement) and what each way of failing it
leads to read as one sequence; what stands alone lives beside it (fs_errors, parked, records, durable).
"""
from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import sorting_root
from ..errors import InputError
from ..lifecycle import Stage
from ..ops.faults import Faults
from ..ops.metrics import Metrics
from ..pipeline.input_file import still_there
from ..pipeline.jobs import Job
from ..pipeline.outcomes import job_record, observe
from ..pipeline.state import PipelineState
from ..sinks.durable import TMP_DIR, clear_tmp, error_path, read_json, result_path, write_json_group
from ..sinks.filing import UNSURE, choose, drop_interrupted_failure, file_input, sorted_dir
from .ack_sync import AckSync
from .fs_errors import blocked_kind, describe, raise_unless_own
from .inflight import InflightJournal
from .parked import PARKED_NAME, Parked, ParkedInputs
from .record_names import name_group
from ..sinks.mqtt_records import MqttSink

log = logging.getLogger(__name__)
GROUP_MAX = 32  # records made durable together at most (two batches' worth, and a bounded retry set)
GROUP_WAIT_S = 0.015  # for a running batch's results: about one batch of four on one core
SYNC_THREADS = 4  # a group's fdatasyncs in flight at once (bench/commit_latency.py: "fdatasync-t")


@dataclass(frozen=True)
class SourceRoute:
    """Where a folder source's outputs and inputs go."""

    after: str  # move | delete | keep
    done_dir: Path | None  # may hold {label}: a folder per top-1 label (see done_dir_for)
    failed_dir: Path
    on_done: Callable[[Job], None]
    inbox: Path | None = None  # the watched folder: the store's too (see fs_errors.store_problem)
    min_score: float = 0.0  # with {label}: a lower top-1 score files the input under ``unsure``


def _jobs(item: "Job | list[Job]") -> list[Job]:
    """A queue item: one job (a failure or duplicate from a worker), or an inference batch's jobs."""
    return list(item) if isinstance(item, list) else [item]


class ResultWriter(Stage):
    """finished -> result JSON on disk -> input acknowledged -> metrics."""

    kind = "writer"

    max_backoff_s = 5.0  # a retry costs one failed write: cheap enough to notice returning space quickly

    def __init__(self, *, finished: "queue.Queue[Job | list[Job]]", output_dir: Path, routes: dict[str, SourceRoute],
                 metrics: Metrics, state: PipelineState, mqtt: MqttSink | None = None,
                 group_wait_s: float = GROUP_WAIT_S, journal: InflightJournal | None = None,
                 parked: ParkedInputs | None = None, faults: Faults = Faults()) -> None:
        super().__init__("writer")
        self._finished, self._output_dir, self._routes = finished, output_dir, routes
        self._mqtt = mqtt
        self._metrics, self._state = metrics, state
        self._group_wait_s = group_wait_s
        self._journal = journal
        self._parked = parked if parked is not None else ParkedInputs(output_dir / PARKED_NAME)
        self._faults = faults
        self._sync_pool: ThreadPoolExecutor | None = None  # group commit's fdatasyncs, while run() runs
        self._acks = AckSync()  # the acknowledgements' folders, synced at most once a second
        self.blocked_reason: str | None = None  # set while the disk refuses writes: one line for STATUS=
        self.blocked_kind: str | None = None  # the same, as a metric label (see blocked_kind())

    def run(self) -> None:
        # Before the first write: what a killed run left half-written is removed, never read.
        for root in {self._output_dir, *(r.failed_dir for r in self._routes.values())}:
            try:
                n = clear_tmp(root)
            except OSError as e:
                log.warning("cannot clear temporary files under %s: %s", root, e.strerror or e)
                continue
            if n:
                log.info("removed %d temporary file(s) left under %s by an interrupted run", n, root)
        self._sync_pool = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="writer-sync")
        try:
            while self.should_keep_running():
                # One more try for each parked input that is due: never holding the others, never blocking.
                self._parked.retry_due(self._settle, lambda job: self._observe(job, 0.0), self._routes)
                try:
                    group = _jobs(self._finished.get(timeout=self.poll_s))
                except queue.Empty:
                    self._acks.flush()
                    continue
                group += self._more(len(group))
                self.in_hand = group  # should this thread die, what it has not acknowledged is given back
                self._write_group(group)
                for job in group:
                    self._commit_with_retry(job)
                self.in_hand = []
                self._acks.flush()
        finally:
            self._acks.flush(force=True)  # a clean stop leaves every acknowledgement durable
            self._sync_pool.shutdown(wait=False, cancel_futures=True)  # idle: each group waits for its syncs
            self._sync_pool = None

    def _more(self, have: int) -> list[Job]:
        """Whatever else is ready now; and while a batch is being inferred, its results too (for at most
        ``group_wait_s``): a group's syncs cost little more for 8 results than for 2, and on two cores
        committing each inference thread's batch alone cost 4% of throughput. A lone photo never waits:
        no batch is running once its own is done."""
        more: list[Job] = []
        deadline = time.monotonic() + self._group_wait_s
        while have + len(more) < GROUP_MAX:
            try:
                more += _jobs(self._finished.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._state.inferring.value:
                break
            try:
                more += _jobs(self._finished.get(timeout=remaining))
            except queue.Empty:
                break
        return more

    def _commit_with_retry(self, job: Job) -> None:
        # A full or read-only disk must not turn good inputs into failures: hold this job (which backs the
        # pipeline up to the sources) and retry until the disk accepts it or we are told to stop.
        delay = 0.5
        while True:
            try:
                self.commit(job)
                break
            except OSError as e:
                self._set_blocked(e, job)
            except Exception:  # noqa: BLE001 - a bug with one job must not stop every later one
                # As if the daemon had crashed for this input alone: it stays in place for the next start.
                log.exception("cannot commit %s/%r; it stays in the inbox", job.source, job.rel)
                if job.path is not None:
                    self._routes[job.source].on_done(job)
                    self._state.in_flight.add(-1)
                return
            if self.wait(delay):
                return  # stopping: the input stays unacknowledged and is redone on the next start
            # A full MQTT spool empties within seconds of the broker coming back, and descriptors or memory
            # come back as soon as someone lets go of them: retry those sooner.
            delay = min(delay * 2, 1.0 if self.blocked_kind in ("spool_full", "resources") else self.max_backoff_s)
        if self.blocked_kind is not None:
            log.warning("results are written again (was blocked: %s)", self.blocked_reason)
            self.blocked_reason = self.blocked_kind = None
            self._metrics.set_output_blocked(None)

    def _set_blocked(self, e: OSError, job: Job) -> None:
        kind = blocked_kind(e)
        reason = f"output blocked ({kind}): {e.strerror or e}"
        if kind != self.blocked_kind:  # log the transition, not every retry
            log.error("cannot write results or acknowledge inputs: %s (%s); holding inputs and retrying",
                      reason, e.filename or job.path)
            self._metrics.set_output_blocked(kind)
        self.blocked_reason, self.blocked_kind = reason, kind

    def commit(self, job: Job) -> None:
        assert job.path is not None
        t0 = time.monotonic()
        recorded = True
        try:
            self._settle(job)
        except Parked as parked:
            recorded = parked.recorded
        if recorded:
            self._observe(job, time.monotonic() - t0)
            if self._journal is not None and job.inflight_key is not None:
                self._journal.committed(job.inflight_key)  # a quarantined input's record is written: released
        self._routes[job.source].on_done(job)
        self._state.in_flight.add(-1)

    def _settle(self, job: Job) -> None:
        """Record, spool, acknowledge. The store's errors are raised as they are (the caller holds the job);
        an error of this input alone fails it (at its result) or parks it (raising ``Parked``)."""
        route = self._routes[job.source]
        # ``committed``: the record is on disk (this run, before a retry, or a previous run): never rewritten,
        # so a result once seen never changes.
        if not job.committed:
            self._write_own_record(job)
        self._spool(job, self._record_path(job))
        self._faults.committed(job.rel)
        done_dir = self._done_dir(job) if job.error is None and route.after == "move" else None
        try:
            if job.error is not None:
                self._acknowledge(job, route, route.failed_dir, force_move=True)
            else:
                self._acknowledge(job, route, done_dir)
        except OSError as e:
            # The store's own folder is the one holding the class folders: a class folder that cannot be made
            # (a file in its place) is the input's problem, as a blocked sub-folder is.
            dest = route.failed_dir if job.error is not None else (
                sorting_root(route.done_dir) if done_dir is not None and route.done_dir is not None else None)
            raise_unless_own(e, [r for r in (route.inbox, dest) if r is not None])
            raise self._parked.park(job, f"cannot {'delete' if dest is None else 'move'} it: {describe(e)}", True)

    def _write_own_record(self, job: Job) -> None:
        """The job's record; a result that cannot be written for reasons of its own becomes a failure record
        saying why, and an input that cannot get even that is parked without one."""
        try:
            self._write_records([job])
        except OSError as e:
            raise_unless_own(e, self._record_roots(job))
            if job.committed:  # written; only the stale failure record of an earlier attempt stays
                log.warning("%s/%r: cannot remove its earlier failure record: %s", job.source, job.rel, describe(e))
                return
            why = f"cannot write its {'failure record' if job.error else 'result'} {self._record_path(job)}"
            if job.error is not None:
                raise self._parked.park(job, f"{why}: {describe(e)}", False)
            job.error, job.stored_as = InputError("io", f"{why}: {describe(e)}"), None  # filed anew, in failed/
            try:
                self._write_records([job])
            except OSError as e2:
                raise_unless_own(e2, self._record_roots(job))
                job.error = job.stored_as = None  # a retry starts again from its result
                raise self._parked.park(job, f"{why}: {describe(e)}; nor its failure record: {describe(e2)}", False)
        if job.error is not None:
            log.warning("%s/%r failed (%s): %s", job.source, job.rel, job.error.kind, job.error.message)

    def _record_roots(self, job: Job) -> tuple[Path, Path]:
        """The store's folders a record is written through: its temporary folder and its own root."""
        if job.error is not None:
            failed = self._routes[job.source].failed_dir
            return failed / TMP_DIR, failed
        return self._output_dir / TMP_DIR, self._output_dir / job.source

    def _record_path(self, job: Job, name: str | None = None) -> Path:
        name = name or job.stored_as or job.rel
        if job.error is not None:
            return error_path(self._routes[job.source].failed_dir, name)
        return result_path(self._output_dir, job.source, name)

    def _file_name(self, job: Job, taken: set[Path]) -> str:
        """A name that holds nothing else for the job's record and input (sinks/filing.py)."""
        route = self._routes[job.source]
        dest_dir = route.failed_dir if job.error else self._done_dir(job) if route.after == "move" else None
        return choose(job.rel, job.sha256, lambda name: self._record_path(job, name), job.path, dest_dir,
                      job.error.kind if job.error is not None else None, taken)

    def _done_dir(self, job: Job) -> Path | None:
        """Where an ok input is moved: the source's done_dir, its ``{label}`` filled in from the top-1 prediction
        (``unsure`` below min_score). A duplicate, or an input acknowledged after a restart, has no predictions
        in hand: its record on disk has them, so it joins the earlier copy's folder."""
        route = self._routes[job.source]
        if route.done_dir is None or "{label}" not in str(route.done_dir):
            return route.done_dir
        predictions = job.predictions
        if predictions is None:
            record = job.record if job.record is not None else read_json(self._record_path(job))
            predictions = (record or {}).get("predictions")
        if not predictions:
            log.warning("%s/%r: no predictions found to sort it by; filed under %s", job.source, job.rel, UNSURE)
            return sorted_dir(route.done_dir, UNSURE)
        top = predictions[0]
        unsure = float(top.get("score", 0.0)) < route.min_score
        return sorted_dir(route.done_dir, UNSURE if unsure else str(top.get("label", UNSURE)))

    def _write_records(self, jobs: list[Job]) -> None:
        """Commit the result or failure record of each folder job, durably, as one group."""
        jobs = name_group(jobs, self._file_name, self._record_path)  # (those found there are kept)
        serving = self._state.model_ref()
        records = [(self._record_path(job), job_record(job, serving),
                    self._routes[job.source].failed_dir if job.error is not None else self._output_dir)
                   for job in jobs]
        write_json_group(records, self._sync_pool)
        for job, (_, obj, _) in zip(jobs, records):
            job.record, job.committed = obj, True
            if job.error is None and job.sha256:
                drop_interrupted_failure(self._routes[job.source].failed_dir, job.rel, job.sha256)

    def _write_group(self, group: list[Job]) -> None:
        """Group commit: under load, the records of every job waiting are made durable together.

        Each durable record costs two syncs (its data, then its rename), ~1-3 ms on this VM's disk and more
        on an SD card, in the one writer thread: one result at a time, the writer would bound throughput.
        Together, their syncs overlap on a few threads, each folder synced once; never the whole file system.
        A failure here changes nothing: each job's ``commit`` then writes its own record, with the retry
        and the blocked-output report that go with it.
        """
        jobs = [j for j in group if j.path is not None and not j.committed]
        if len(jobs) < 2:
            return
        try:
            self._write_records(jobs)
        except OSError:
            return

    def _spool(self, job: Job, record_path: Path) -> None:
        """Into the MQTT spool, before the input is acknowledged: a result acknowledged is a result kept.

        Once per job (a retry after a full spool does not add it twice). A record found from an earlier run
        (a duplicate) may never have reached the spool before that run stopped, so it is spooled again: a
        repeated message at worst, which QoS 1 consumers handle anyway.
        """
        if self._mqtt is None or job.spooled:
            return
        record = job.record if job.record is not None else read_json(record_path)
        if record is not None:
            self._mqtt.add(record)
        job.spooled = True

    def _observe(self, job: Job, write_s: float) -> None:
        observe(self._metrics, job, write_s)

    def _acknowledge(self, job: Job, route: SourceRoute, dest_dir: Path | None, force_move: bool = False) -> None:
        assert job.path is not None
        if not still_there(job.path, job.identity):  # an input processed in place, replaced since it was read
            log.info("%s/%s was replaced by a newer file since it was read: its record stands, the newer file "
                     "is a new input", job.source, job.rel)
            return
        try:
            if force_move or route.after == "move":
                assert dest_dir is not None
                self._acks.acknowledged(job.path, file_input(job.path, dest_dir, job.stored_as or job.rel,
                                                             job.rel, job.sha256))
            elif route.after == "delete":
                job.path.unlink()
                self._acks.acknowledged(job.path, None)
        except FileNotFoundError:
            log.info("%s/%s was gone before it could be acknowledged", job.source, job.rel)
