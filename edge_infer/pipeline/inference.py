"""The inference threads: dynamic batching, top-k. Each runs its own batches on the one shared session.

onnxruntime's ``run`` is safe to call from several threads at once; each call gets its own activations
from the session's arena. Nothing else calls ``run`` on the serving session.
"""
from __future__ import annotations

import logging
import queue
import time
from typing import Any, Callable

import numpy as np

from ..classifier.postprocess import top_k
from ..classifier.session import ModelSession
from ..decoding.preprocess import normalise
from ..errors import InputError
from ..lifecycle import Stage
from ..ops.memory import heap_trimmer
from ..ops.metrics import Metrics
from .context import StageContext
from .jobs import CameraFrame, Job, Ticket
from .records import model_ref
from .state import PipelineState
from .tensor_pool import TensorPool

log = logging.getLogger(__name__)
TRIM_EVERY_S = 0.2  # under load: often enough to keep the peak flat, rarely enough to cost nothing measurable
TRIM_IDLE_S = 1.0  # otherwise once the pipeline has been idle this long


def collect_batch(q: "queue.Queue[Any]", first: Any, max_size: int, max_wait_s: float,
                  more_coming: Callable[[], bool] = lambda: True) -> list[Any]:
    """``first`` plus whatever else arrives within ``max_wait_s``, up to ``max_size`` jobs.

    The wait is only worth paying when more work is on its way; ``more_coming`` says so (inputs queued or
    being prepared). A lone photo at light load goes straight to inference.
    """
    batch = [first]
    deadline = time.monotonic() + max_wait_s
    while len(batch) < max_size:
        try:
            batch.append(q.get_nowait())  # already waiting: never pay the wait for it
            continue
        except queue.Empty:
            pass
        if not more_coming():
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            batch.append(q.get(timeout=remaining))
        except queue.Empty:
            break
    return batch


class InferenceStage(Stage):
    """prepared -> finished (folder inputs, to the writer) and frames (camera frames, to the
    regions stage), in batches of up to ``max_size`` collected within ``max_wait_s``.

    Several may share one ``prepared`` queue and one session (``pipeline.inference_threads``); ``trims_heap``
    is set on one of them only, since trimming is process-wide.
    """

    kind = "inference"

    def __init__(self, ctx: StageContext, *, session: ModelSession, top: int, max_size: int,
                 max_wait_s: float, name: str = "inference", trims_heap: bool = True) -> None:
        super().__init__(name)
        assert ctx.metrics is not None and ctx.pool is not None and ctx.state is not None
        self.session = session
        self.model_ref = model_ref(session.manifest.name, session.sha256, session.precision)
        self._offered: ModelSession | None = None
        self._prepared, self._finished, self._frames = ctx.prepared, ctx.finished, ctx.frames
        self._metrics: Metrics = ctx.metrics
        self._top, self._max_size, self._max_wait_s = top, max_size, max_wait_s
        self._pool: TensorPool = ctx.pool
        self._state: PipelineState = ctx.state
        self._batch = np.empty((max_size, *session.input_shape), np.float32)
        self._trim_heap = heap_trimmer() if trims_heap else None
        self._trimmed_at = 0.0
        self._last_batch_at = 0.0

    def offer(self, session: ModelSession) -> None:
        """A self-tested replacement model: swapped in between two batches by this stage's own thread."""
        self._offered = session

    def _swap_if_offered(self) -> None:
        new, self._offered = self._offered, None
        if new is None:
            return
        # Same preprocessing (the self-test checks it), so the batch buffer and the crops in flight still fit.
        self.session = new
        self.model_ref = model_ref(new.manifest.name, new.sha256, new.precision)
        self._state.serving = new  # the metrics already name it: App._offer set them for every thread at once

    def run(self) -> None:
        while self.should_keep_running():
            self.heartbeat.beat()
            try:
                first = self._prepared.get(timeout=self.poll_s)
            except queue.Empty:
                if self._trim_heap and self._trimmed_at < self._last_batch_at < time.monotonic() - TRIM_IDLE_S:
                    self._trim()
                continue
            batch = collect_batch(self._prepared, first, self._max_size, self._max_wait_s, self._state.more_coming)
            # Camera tickets become the newest frame of their camera: a job for each of its regions.
            jobs = [j for t in batch for j in (t.take() or [] if isinstance(t, Ticket) else [t])]
            if not jobs:
                continue
            self.in_hand = jobs  # given back should this thread die before handing it on
            self._swap_if_offered()  # here, not before the wait: the next batch after the offer gets the new model
            self._infer(jobs)
            # One put for the whole batch: the writer then commits it as one group (its syncs shared), where
            # putting job by job let it wake at the first and commit that one alone with its own fsyncs.
            self._put(jobs)
            self.in_hand = []
            self._last_batch_at = time.monotonic()
            # Trimming hands freed pages back, and the next image pays ~0.6 ms to fault them in again: worth
            # it while batches follow each other (the peak stays flat), not after every lone photo.
            if self._trim_heap and self._prepared.qsize() and self._last_batch_at - self._trimmed_at > TRIM_EVERY_S:
                self._trim()

    def _trim(self) -> None:
        assert self._trim_heap is not None
        self._trim_heap()
        self._trimmed_at = time.monotonic()

    def _infer(self, batch: list[Job]) -> None:
        """Each model's jobs (camera regions may have their own) in runs of at most ``max_size``: a camera
        frame with regions brings several jobs at once."""
        by_model: dict[int, list[Job]] = {}
        for job in batch:
            # A region's own model, if it has one; else the serving model (None).
            own = job.session if isinstance(job, CameraFrame) else None
            by_model.setdefault(id(own), []).append(job)
        for jobs in by_model.values():
            first = jobs[0]
            session = (first.session if isinstance(first, CameraFrame) else None) or self.session
            ref = self.model_ref if session is self.session else model_ref(session.manifest.name, session.sha256,
                                                                             session.precision)
            for i in range(0, len(jobs), self._max_size):
                self._run(session, ref, jobs[i:i + self._max_size])

    def _run(self, session: ModelSession, ref: dict[str, str], batch: list[Job]) -> None:
        spec = session.manifest.preprocess
        for i, job in enumerate(batch):
            normalise(job.tensor, spec, out=self._batch[i])  # ~0.1 ms, in place into the batch
            self._pool.release(job.tensor)  # consumed: a worker may refill it now
            job.tensor = None
        x = self._batch[:len(batch)]
        t0 = time.monotonic()
        try:
            with self._state.inferring.held():  # the writer waits for a running batch to commit it with its group
                logits = session.run(x)
        except Exception as e:  # noqa: BLE001 - an onnxruntime failure fails this batch, not the daemon
            log.exception("inference failed for a batch of %d", len(batch))
            for j in batch:
                j.error = InputError("internal", f"inference failed: {e}")
            return
        finally:
            elapsed = time.monotonic() - t0
        self._metrics.observe_batch(len(batch))
        self._metrics.observe_stage("inference", elapsed)
        labels = session.manifest.labels
        for job, preds in zip(batch, top_k(logits, self._top, labels)):
            job.predictions = preds
            job.model = ref
            job.timings["inference"] = elapsed

    def _put(self, batch: list[Job]) -> None:
        """Folder inputs to the writer, camera frames to the regions stage: one put each, whole."""
        frames = [j for j in batch if isinstance(j, CameraFrame)]
        folder = [j for j in batch if not isinstance(j, CameraFrame)] if frames else batch
        for jobs, to in ((folder, self._finished), (frames, self._frames)):
            if jobs:
                self._put_into(to, jobs)

    def _put_into(self, to: "queue.Queue[Any]", jobs: list[Job]) -> None:
        while self.should_keep_running():
            try:
                to.put(jobs, timeout=self.poll_s)
                return
            except queue.Full:
                self.heartbeat.beat()  # blocked by the stage downstream, not hung
