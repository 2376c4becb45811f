"""The writer: commit each result durably, then acknowledge its input (move / delete / keep).

The order is the exactly-once guarantee: an input leaves the inbox only after its result (or its error
record) is on disk, and a restart that finds the result for the same bytes acknowledges without redoing.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .jobs import Job
from .lifecycle import Stage
from .metrics import Metrics
from .results import error_result, frame_result, ok_result
from .sinks.json_file import error_path, read_json, result_path, write_json_atomic
from .sinks.jsonl import JsonlSink
from .spool import SpoolFull

if TYPE_CHECKING:
    from .sinks.mqtt import MqttSink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceRoute:
    """Where a folder source's outputs and inputs go."""

    after: str  # move | delete | keep
    done_dir: Path | None
    failed_dir: Path
    on_done: Callable[[Job], None]


def _timings_ms(job: Job) -> dict[str, float]:
    """The result's ``timings_ms``: the stages a job went through, in milliseconds."""
    return {k: 1000 * job.timings.get(k, 0.0) for k in ("queue", "preprocess", "inference")}


def move_file(src: Path, dest: Path) -> None:
    """Rename within a file system; copy, fsync and unlink across file systems (``shutil.move`` does)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        shutil.move(str(src), str(dest))


class ResultWriter(Stage):
    """finished -> result JSON on disk -> input acknowledged -> metrics."""

    max_backoff_s = 30.0

    def __init__(self, finished: "queue.Queue[Job]", output_dir: Path, routes: dict[str, SourceRoute],
                 model: dict[str, str], metrics: Metrics, on_acknowledged: Callable[[Job], None],
                 camera_sinks: dict[str, JsonlSink] | None = None, mqtt: MqttSink | None = None) -> None:
        super().__init__("writer")
        self._finished, self._output_dir, self._routes = finished, output_dir, routes
        self._camera_sinks = camera_sinks or {}
        self._mqtt = mqtt
        self._model, self._metrics = model, metrics
        self._on_acknowledged = on_acknowledged
        self.blocked_reason: str | None = None  # set while the disk refuses writes

    def run(self) -> None:
        try:
            while self.should_keep_running():
                try:
                    job = self._finished.get(timeout=self.poll_s)
                except queue.Empty:
                    continue
                self._commit_with_retry(job)
        finally:
            for sink in self._camera_sinks.values():
                sink.close()

    def _commit_with_retry(self, job: Job) -> None:
        # A full or read-only disk must not turn good inputs into failures: hold this job (which backs the
        # pipeline up to the sources) and retry until the disk accepts it or we are told to stop.
        delay = 0.5
        while True:
            try:
                self.commit(job)
                self.blocked_reason = None
                return
            except OSError as e:
                # A full MQTT spool empties within seconds of the broker coming back: retry soon, say it once.
                full = isinstance(e, SpoolFull)
                reason = f"{'holding inputs' if full else 'cannot write results'}: {e.strerror or e}"
                if not full or reason != self.blocked_reason:
                    log.error("%s (%s); retrying in %.1fs", reason, job.path, delay)
                self.blocked_reason = reason
                if self.wait(delay):
                    return  # stopping: the input stays unacknowledged and is redone on the next start
                delay = min(delay * 2, 1.0 if full else self.max_backoff_s)

    def commit(self, job: Job) -> None:
        if job.frame is not None:
            self._commit_frame(job)
            return
        assert job.path is not None
        route = self._routes[job.source]
        t0 = time.monotonic()
        if job.error is not None:
            record = error_result(job.source, job.rel, job.sha256, job.error, self._model)
            write_json_atomic(error_path(route.failed_dir, job.rel), record)
            self._send(record)
            self._acknowledge(job, route, route.failed_dir / job.rel, force_move=True)
            log.warning("%s/%s failed (%s): %s", job.source, job.rel, job.error.kind, job.error.message)
        else:
            if not job.duplicate:
                assert job.predictions is not None
                result = ok_result(job.source, job.rel, job.sha256 or "", job.predictions, self._model,
                                   job.width, job.height, _timings_ms(job))
                write_json_atomic(result_path(self._output_dir, job.source, job.rel), result)
                self._send(result)
            elif self._mqtt is not None:
                # A restart found this result already written; it may never have reached the spool, so spool
                # it again (a duplicate message at worst, which QoS 1 consumers handle anyway).
                previous = read_json(result_path(self._output_dir, job.source, job.rel))
                if previous is not None:
                    self._send(previous)
            self._acknowledge(job, route, route.done_dir / job.rel if route.done_dir else None)
        self._observe(job, time.monotonic() - t0)
        route.on_done(job)
        self._on_acknowledged(job)

    def _commit_frame(self, job: Job) -> None:
        """A camera frame: one line in its camera's JSON Lines file; there is no input to acknowledge."""
        t0 = time.monotonic()
        assert job.frame is not None
        if job.error is not None:
            obj = error_result(job.source, job.rel, None, job.error, self._model)
        else:
            assert job.predictions is not None
            obj = ok_result(job.source, job.rel, "", job.predictions, self._model, job.width, job.height,
                            _timings_ms(job))
        line = frame_result(obj, job.frame)
        self._camera_sinks[job.source].append(line)
        if self._mqtt is not None:
            self._mqtt.add_frame(line)
        self._observe(job, time.monotonic() - t0)

    def _send(self, result: dict[str, Any]) -> None:
        """Into the MQTT spool, before the input is acknowledged: a result acknowledged is a result kept."""
        if self._mqtt is not None:
            self._mqtt.add(result)

    def _observe(self, job: Job, write_s: float) -> None:
        self._metrics.observe_stage("write", write_s)
        for stage in ("queue", "preprocess"):
            if stage in job.timings:
                self._metrics.observe_stage(stage, job.timings[stage])
        self._metrics.count(job.source, job.outcome, job.error.kind if job.error else None)
        if job.outcome == "ok":
            self._metrics.observe_end_to_end(job.source, max(0.0, time.time() - job.detected_at))

    @staticmethod
    def _acknowledge(job: Job, route: SourceRoute, dest: Path | None, force_move: bool = False) -> None:
        assert job.path is not None
        try:
            if force_move or route.after == "move":
                assert dest is not None
                move_file(job.path, dest)
            elif route.after == "delete":
                job.path.unlink()
        except FileNotFoundError:
            log.info("%s/%s was gone before it could be acknowledged", job.source, job.rel)
