"""Preprocessing workers: read an input once (bytes -> sha256 -> pixels), or recognise it as already done.

Several run in parallel: Pillow's decode and resize and numpy release the GIL, so threads use every core.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..lifecycle import Stage
from ..model.preprocess import PreprocessSpec, crop_pixels
from ..sinks.durable import read_json, result_path
from .input_file import read_input
from .jobs import Job
from .state import PipelineState
from .tensor_pool import TensorPool

log = logging.getLogger(__name__)


class PreprocessWorker(Stage):
    """jobs -> (prepared | finished): a uint8 crop for inference, or straight to the writer when failed/duplicate."""

    def __init__(self, *, index: int, jobs: "queue.Queue[Job]", prepared: "queue.Queue[Job]",
                 finished: "queue.Queue[Job]", spec: PreprocessSpec, output_dir: Path,
                 max_pixels: int, max_bytes: int, max_decode_mb: int, formats: tuple[str, ...], pool: TensorPool,
                 state: PipelineState) -> None:
        super().__init__(f"preprocess-{index}")
        self._jobs, self._prepared, self._finished = jobs, prepared, finished
        self._spec, self._output_dir = spec, output_dir
        self._max_pixels, self._max_bytes = max_pixels, max_bytes
        self._max_decode_mb, self._formats = max_decode_mb, formats
        self._pool = pool
        self._state = state

    def run(self) -> None:
        while self.should_keep_running():
            try:
                job = self._jobs.get(timeout=self.poll_s)
            except queue.Empty:
                continue
            job.timings["queue"] = time.monotonic() - job.enqueued_at
            t0 = time.monotonic()
            # Counted while preparing (the batcher may wait for it), and no longer before the hand-over: the
            # batcher wakes on it and asks whether more is coming; "yes" from this very job would make a lone
            # photo wait the whole batch.max_wait_ms for nothing.
            with self._state.preparing.held():
                self.process(job)
            job.timings["preprocess"] = time.monotonic() - t0
            if job.error or job.duplicate:
                self._put(self._finished, job)
            elif job.tensor is not None:
                self._put(self._prepared, job)
            # else: stopped while waiting for a tensor; the input stays for the next start

    def process(self, job: Job) -> None:
        assert job.path is not None  # workers take folder inputs; camera frames arrive prepared
        try:
            data = read_input(job.path, self._max_bytes)
            job.sha256 = hashlib.sha256(data).hexdigest()
            # Exactly once: a durable result for these very bytes means a previous run (or this one, before a
            # crash) finished the work but did not get to acknowledge the input.
            previous = read_json(result_path(self._output_dir, job.source, job.rel))
            if previous and previous.get("status") == "ok" and previous.get("input_sha256") == job.sha256:
                job.duplicate = job.committed = True
                return
            out = self._acquire()
            if out is None:
                return  # stopping
            job.tensor = out
            p = crop_pixels(data, self._spec, self._max_pixels, out=out, formats=self._formats,
                            max_decode_mb=self._max_decode_mb)
            job.width, job.height = p.width, p.height
        except InputError as e:
            job.error = e
        except Exception as e:  # noqa: BLE001 - one bad input must never stop the worker
            log.exception("unexpected error preprocessing %s", job.path)
            job.error = InputError("internal", f"{type(e).__name__}: {e}")
        if job.error is not None:
            self._pool.release(job.tensor)
            job.tensor = None

    def _acquire(self) -> "np.ndarray | None":
        while self.should_keep_running():
            out = self._pool.acquire(self.poll_s)
            if out is not None:
                return out
        return None

    def _put(self, q: "queue.Queue[Job]", job: Job) -> None:
        while self.should_keep_running():
            try:
                q.put(job, timeout=self.poll_s)
                return
            except queue.Full:
                continue
        # Stopping with the queue full: the input is not acknowledged, so it is picked up on the next start.
