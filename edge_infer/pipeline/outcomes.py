"""What a stage that finishes a job reports: its record (result or failure) and its metrics.
Shared by the writer (folder inputs) and the regions stage (camera frames)."""
from __future__ import annotations

import time
from typing import Any

from ..ops.metrics import Metrics
from .jobs import Job
from .records import error_result, ok_result


def timings_ms(job: Job) -> dict[str, float]:
    """The result's ``timings_ms``: the stages a job went through, in milliseconds."""
    return {k: 1000 * job.timings.get(k, 0.0) for k in ("queue", "preprocess", "inference")}


def job_record(job: Job, serving: dict[str, str], sha256: str | None = None,
               stored_as: str | None = None) -> dict[str, Any]:
    """The job's result object, or its failure record; it names the model that made the
    predictions (a reload may have swapped it since), else ``serving``, the one serving now.
    ``sha256`` and ``stored_as``: a folder input's (a camera frame has neither)."""
    model = job.model or serving
    if job.error is not None:
        return error_result(job.source, job.rel, sha256, job.error, model, stored_as)
    assert job.predictions is not None
    return ok_result(job.source, job.rel, sha256 or "", job.predictions, model, job.width,
                     job.height, timings_ms(job), stored_as)


def observe(metrics: Metrics, job: Job, write_s: float) -> None:
    """A finished job in the metrics: its stages' times, outcome, end-to-end latency and top-1."""
    metrics.observe_stage("write", write_s)
    for stage in ("queue", "preprocess"):
        if stage in job.timings:
            metrics.observe_stage(stage, job.timings[stage])
    metrics.count(job.source, job.outcome, job.error.kind if job.error else None)
    if job.outcome == "ok":
        metrics.observe_end_to_end(job.source, max(0.0, time.time() - job.detected_at))
        if job.predictions:
            metrics.predicted(job.source, str(job.predictions[0]["label"]))
