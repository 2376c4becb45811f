"""The writer: commit each folder input's result durably, then acknowledge the input (move,
delete or keep).

The order is the exactly-once guarantee: an input leaves the inbox only after its result (or its
error record) is on disk, and a restart that finds the result for the same bytes acknowledges
without redoing. A disk that refuses writes (full, read-only, folder gone) blocks the writer,
never fails an input: the job is retried with backoff, the pipeline backs up to the inbox, and the
block is reported (metric, log, STATUS=, /readyz) until it clears by itself. So does a machine
short of descriptors or memory, for as long as it is. An error of one input alone (see fs_errors.py)
never holds the others: at its result it fails that input (one failure record saying why), at its
acknowledgement it parks it (see parked.py).

This module keeps the sequence; each step lives beside it: names and class folders (naming.py),
the records and their group commit (record_writes.py), the MQTT spool (handoff.py), the
acknowledgement (acknowledge.py). Camera frames never come here: the regions stage has them.
"""
from __future__ import annotations

import logging
import queue
import time
from pathlib import Path

from ..lifecycle import Stage
from ..ops.metrics import Metrics
from ..pipeline.context import StageContext
from ..pipeline.jobs import FolderInput
from ..pipeline.outcomes import observe
from ..pipeline.state import PipelineState
from ..sinks.durable import clear_tmp
from ..sinks.mqtt_records import MqttSink
from .acknowledge import Acknowledger
from .fs_errors import blocked_kind
from .handoff import spool
from .naming import Naming, SourceRoute
from .parked import PARKED_NAME, Parked, ParkedInputs
from .record_writes import RecordWrites

__all__ = ["ResultWriter", "SourceRoute"]
log = logging.getLogger(__name__)
GROUP_MAX = 32  # records made durable together at most (two batches, and a bounded retry set)
GROUP_WAIT_S = 0.015  # for a running batch's results: about one batch of four on one core


def _jobs(item: "FolderInput | list[FolderInput]") -> list[FolderInput]:
    """A queue item: one job (a failure or duplicate from a worker), or a batch's jobs."""
    return list(item) if isinstance(item, list) else [item]


class ResultWriter(Stage):
    """finished -> result JSON on disk -> input acknowledged -> metrics."""

    kind = "writer"

    max_backoff_s = 5.0  # a retry costs one failed write: cheap enough to see space come back soon

    def __init__(self, ctx: StageContext, *, output_dir: Path, routes: dict[str, SourceRoute],
                 mqtt: MqttSink | None = None, group_wait_s: float = GROUP_WAIT_S) -> None:
        super().__init__("writer")
        assert ctx.metrics is not None and ctx.state is not None
        self._finished, self._output_dir, self._routes = ctx.finished, output_dir, routes
        self._mqtt = mqtt
        self._metrics: Metrics = ctx.metrics
        self._state: PipelineState = ctx.state
        self._group_wait_s = group_wait_s
        self._journal = ctx.journal
        parked = ctx.parked
        self._parked = parked if parked is not None else ParkedInputs(output_dir / PARKED_NAME)
        self._faults = ctx.faults
        self._naming = Naming(output_dir, routes)
        self._records = RecordWrites(self._naming, ctx.state, self._parked)
        self._acks = Acknowledger(self._naming, self._parked)
        self.blocked_reason: str | None = None  # while the disk refuses writes: a line for STATUS=
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
                log.info("removed %d temporary file(s) left under %s by an interrupted run", n,
                         root)
        self._records.open()
        try:
            while self.should_keep_running():
                # One more try for each parked input that is due: never holding the others, never
                # blocking.
                self._parked.retry_due(self._settle, lambda job: self._observe(job, 0.0),
                                       self._routes)
                try:
                    group = _jobs(self._finished.get(timeout=self.poll_s))
                except queue.Empty:
                    self._acks.flush()
                    continue
                group += self._more(len(group))
                self.in_hand = group  # should this thread die, what it has not acknowledged is
                # given back
                self._write_group(group)
                for job in group:
                    self._commit_with_retry(job)
                self.in_hand = []
                self._acks.flush()
        finally:
            self._acks.flush(force=True)  # a clean stop leaves every acknowledgement durable
            self._records.close()

    def _more(self, have: int) -> list[FolderInput]:
        """Whatever else is ready now; and while a batch is being inferred, its results too (for
        at most ``group_wait_s``): a group's syncs cost little more for 8 results than for 2, and on
        two cores committing each inference thread's batch alone cost 4% of throughput. A lone photo
        never waits: no batch is running once its own is done."""
        more: list[FolderInput] = []
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

    def _commit_with_retry(self, job: FolderInput) -> None:
        # A full or read-only disk must not turn good inputs into failures: hold this job (which
        # backs the pipeline up to the sources) and retry until the disk accepts it or we stop.
        delay = 0.5
        while True:
            try:
                self.commit(job)
                break
            except OSError as e:
                self._set_blocked(e, job)
            except Exception:  # noqa: BLE001 - a bug with one job must not stop every later one
                # As if the daemon had crashed for this input alone: it stays for the next start.
                log.exception("cannot commit %s/%r; it stays in the inbox", job.source, job.rel)
                self._routes[job.source].on_done(job)
                self._state.in_flight.add(-1)
                return
            if self.wait(delay):
                return  # stopping: the input stays unacknowledged, redone at the next start
            # A full MQTT spool empties within seconds of the broker coming back, and descriptors or
            # memory come back as soon as someone lets go of them: retry those sooner.
            soon = self.blocked_kind in ("spool_full", "resources")
            delay = min(delay * 2, 1.0 if soon else self.max_backoff_s)
        if self.blocked_kind is not None:
            log.warning("results are written again (was blocked: %s)", self.blocked_reason)
            self.blocked_reason = self.blocked_kind = None
            self._metrics.set_output_blocked(None)

    def _set_blocked(self, e: OSError, job: FolderInput) -> None:
        kind = blocked_kind(e)
        reason = f"output blocked ({kind}): {e.strerror or e}"
        if kind != self.blocked_kind:  # log the transition, not every retry
            log.error("cannot write results or acknowledge inputs: %s (%s); holding inputs and "
                      "retrying", reason, e.filename or job.path)
            self._metrics.set_output_blocked(kind)
        self.blocked_reason, self.blocked_kind = reason, kind

    def commit(self, job: FolderInput) -> None:
        t0 = time.monotonic()
        recorded = True
        try:
            self._settle(job)
        except Parked as parked:
            recorded = parked.recorded
        if recorded:
            self._observe(job, time.monotonic() - t0)
            if self._journal is not None and job.inflight_key is not None:
                # a quarantined input's record is written: released
                self._journal.committed(job.inflight_key)
        self._routes[job.source].on_done(job)
        self._state.in_flight.add(-1)

    def _settle(self, job: FolderInput) -> None:
        """Record, spool, acknowledge. The store's errors are raised as they are (the caller holds
        the job); an error of this input alone fails it (at its result) or parks it (``Parked``)."""
        # ``committed``: the record is on disk (this run, before a retry, or a previous run): never
        # rewritten, so a result once seen never changes.
        if not job.committed:
            self._records.own(job)
        spool(self._mqtt, job, self._naming.record_path(job))
        self._faults.committed(job.rel)
        self._acks.acknowledge(job)

    def _write_records(self, jobs: list[FolderInput]) -> None:
        self._records.write(jobs)

    def _write_group(self, group: list[FolderInput]) -> None:
        self._records.group(group)

    def _observe(self, job: FolderInput, write_s: float) -> None:
        observe(self._metrics, job, write_s)
