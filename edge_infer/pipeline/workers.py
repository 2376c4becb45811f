"""Preprocessing workers: read an input once (bytes -> sha256 -> pixels), or recognise it as already done.

Several run in parallel: Pillow's decode and resize and numpy release the GIL, so threads use every core.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import stat
import time
from pathlib import Path

import numpy as np

from .tensor_pool import TensorPool
from ..errors import InputError
from .jobs import Job
from ..lifecycle import Stage
from ..model.preprocess import PreprocessSpec, crop_pixels
from ..sinks.durable import read_json, result_path

log = logging.getLogger(__name__)


def read_input(path: Path, max_bytes: int, follow_symlinks: bool = False) -> bytes:
    """The whole file, with typed errors; the size limit is checked before reading a byte.

    Only regular files are read: by default a symbolic link is not followed (in a watched folder it could
    point anywhere, outside the configured folders), and a FIFO or device is never opened in blocking mode
    (it could hang a worker).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        with open(os.open(path, flags), "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise InputError("unsupported", "not a regular file (a FIFO, socket or device)")
            size = st.st_size
            if size > max_bytes:
                raise InputError("too_large", f"{size} bytes exceeds pipeline.max_file_bytes ({max_bytes})")
            # Sized by fstat: read(max_bytes + 1) would allocate (and page-map) 100 MB for every photo,
            # ~65 us each here. A file that grew since fstat is read on, up to the limit.
            data = f.read(size + 1)
            if len(data) > size:
                data += f.read(max_bytes + 1 - len(data))
    except FileNotFoundError as e:
        raise InputError("io", "file vanished before it was read") from e
    except IsADirectoryError as e:
        raise InputError("unsupported", "is a directory") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError("unsupported", "a symbolic link (links are never followed)") from e
        raise InputError("io", f"cannot read file: {e.strerror or e}") from e
    if not data:
        raise InputError("decode", "empty file (0 bytes)")
    return data


class PreprocessWorker(Stage):
    """jobs -> (prepared | finished): a uint8 crop for inference, or straight to the writer when failed/duplicate."""

    def __init__(self, index: int, jobs: "queue.Queue[Job]", prepared: "queue.Queue[Job]",
                 finished: "queue.Queue[Job]", spec: PreprocessSpec, output_dir: Path,
                 max_pixels: int, max_bytes: int, pool: TensorPool) -> None:
        super().__init__(f"preprocess-{index}")
        self._jobs, self._prepared, self._finished = jobs, prepared, finished
        self._spec, self._output_dir = spec, output_dir
        self._max_pixels, self._max_bytes = max_pixels, max_bytes
        self._pool = pool
        self.busy = False  # preparing a job now: the batcher may wait for it

    def run(self) -> None:
        while self.should_keep_running():
            try:
                job = self._jobs.get(timeout=self.poll_s)
            except queue.Empty:
                continue
            self.busy = True
            job.timings["queue"] = time.monotonic() - job.enqueued_at
            t0 = time.monotonic()
            self.process(job)
            job.timings["preprocess"] = time.monotonic() - t0
            # Not busy before the hand-over: the batcher wakes on it and asks whether more is coming; "yes"
            # from this very job would make a lone photo wait the whole batch.max_wait_ms for nothing.
            self.busy = False
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
            p = crop_pixels(data, self._spec, self._max_pixels, out=out)
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
