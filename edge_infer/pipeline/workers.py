"""Preprocessing workers: hand each input to a decoder, or recognise it as already done.

Each worker thread owns one decoder (``pipeline.decoders: process``, the default: a sandboxed process that
may crash, hang or run out of memory on a stranger's bytes and costs only that input; ``thread``: decoding in
this thread, as before the decoder processes). The thread opens the input itself, passes the descriptor,
and waits for the answer at most ``pipeline.decode_timeout_s``: a decoder that dies or overruns is replaced
at once and the input tried once more in the fresh one, then failed as ``crashed`` or ``timeout``.
"""
from __future__ import annotations

import logging
import os
import queue
import time
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from ..commit.inflight import input_key
from ..decoding.processes import Decoded, Decodes, DecoderStartError, Died, Outcome
from ..errors import InputError, ResourceError
from ..lifecycle import Stage, backoff_s
from ..sinks.filing import find_result
from .input_file import open_input
from .context import StageContext
from .jobs import FolderInput
from .state import PipelineState
from .tensor_pool import TensorPool

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Stopping(Exception):
    """Asked to stop while waiting for a decoder to start."""


class PreprocessWorker(Stage):
    """jobs -> (prepared | finished): a uint8 crop for inference, or straight to the writer when failed/duplicate."""

    kind = "preprocess"

    def __init__(self, ctx: StageContext, *, index: int, decoder: Decodes, output_dir: Path,
                 max_bytes: int, decode_timeout_s: float) -> None:
        super().__init__(f"preprocess-{index}")
        assert ctx.pool is not None and ctx.state is not None
        self._jobs, self._prepared, self._finished = ctx.jobs, ctx.prepared, ctx.finished
        self._decoder, self._output_dir = decoder, output_dir
        self._max_bytes, self._timeout_s = max_bytes, decode_timeout_s
        self._pool: TensorPool = ctx.pool
        self._state: PipelineState = ctx.state
        self._journal = ctx.journal
        self._faults = ctx.faults

    def run(self) -> None:
        while self.should_keep_running():
            try:
                job = self._jobs.get(timeout=self.poll_s)
            except queue.Empty:
                continue
            self.in_hand = [job]  # given back should this thread die before handing it on
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
            self.in_hand = []

    def process(self, job: FolderInput) -> None:
        fd = -1
        try:
            fd, st = self._open(job)
            job.identity = input_key(st)
            if self._journal is not None:
                # Before a byte is decoded: an input that takes the daemon down with it is known at the next
                # start (see inflight.py). A quarantined one keeps its key until its failure record is
                # committed (the writer clears it then).
                job.inflight_key = job.identity
                self._journal.check(job.inflight_key)
            out = self._acquire()
            if out is None:
                return  # stopping
            job.tensor = out
            decoded = self._decode_in_flight(job, fd, st.st_size, self._pool.slot(out))
            job.sha256 = decoded.sha256
            if decoded.error is not None:
                raise InputError(*decoded.error)
            # Exactly once: a durable result for these very bytes means a previous run (or this one, before a
            # crash) finished the work but did not get to acknowledge the input.
            # (Under its own name, or the suffixed one it took because that name held other bytes.)
            job.stored_as = find_result(self._output_dir, job.source, job.rel, job.sha256)
            if job.stored_as is not None:
                job.duplicate = job.committed = True
            job.width, job.height = decoded.width, decoded.height
        except InputError as e:
            job.error = e
        except _Stopping:
            # stopping: the input is not acknowledged and is redone on the next start
            self._pool.release(job.tensor)
            job.tensor = None
            return
        except Exception as e:  # noqa: BLE001 - one bad input must never stop the worker
            log.exception("unexpected error preprocessing %s", job.path)
            job.error = InputError("internal", f"{type(e).__name__}: {e}")
        finally:
            if fd >= 0:
                os.close(fd)
        if job.error is not None or job.duplicate:
            self._pool.release(job.tensor)
            job.tensor = None

    def _open(self, job: FolderInput) -> tuple[int, os.stat_result]:
        """``open_input``; out of descriptors or memory, the open is retried (descriptors come back as soon as
        someone lets go of one: a short backoff)."""
        path = job.path
        assert path is not None
        return self._until_it_works(lambda: open_input(path, self._max_bytes), ResourceError, 0.05, 2.0)

    def _until_it_works(self, call: Callable[[], T], errors: type[Exception], lo_s: float, hi_s: float) -> T:
        """``call()``, again after each of ``errors``: the machine's problem, not the input's, so the input
        waits and the call is retried with backoff (``lo_s`` doubling to ``hi_s``) until we stop."""
        failures = 0
        while True:
            try:
                return call()
            except errors as e:
                if failures == 0:
                    log.error("%s: %s; retrying, inputs wait", self.name, e)
                failures += 1
                if self.wait(backoff_s(failures, lo_s, hi_s)):
                    raise _Stopping() from e

    def _decode_in_flight(self, job: FolderInput, fd: int, size: int, slot: int) -> Decoded:
        """The decode, marked in the in-flight journal while it runs: only an input being decoded when the
        daemon dies is held against (a photo merely waiting for inference or its commit is not: with ~10
        of those at any moment, every kill would mark healthy photos, and two kills in a row quarantine them)."""
        key, job.inflight_key = job.inflight_key, None
        if self._journal is not None and key is not None:
            self._journal.started(key, job.source, job.rel)
        self._faults.starting(job.rel)
        try:
            return self._decode(job, fd, size, slot)
        finally:
            if self._journal is not None and key is not None:
                self._journal.committed(key)  # decoded (or failed in its decoder): it did not take us down

    def _decode(self, job: FolderInput, fd: int, size: int, slot: int) -> Decoded:
        """The decoder's answer; a decoder that dies or overruns is replaced and the input tried once more."""
        died: Died | None = None
        for attempt in (1, 2):
            outcome = self._decode_once(fd, size, slot)
            if isinstance(outcome, Decoded):
                return outcome
            died = outcome  # counted by the decoder, which replaces itself
            log.warning("decoder %s on %s/%r (attempt %d of 2): %s", outcome.reason, job.source, job.rel,
                        attempt, outcome.detail)
        assert died is not None
        log.error("%s/%r failed: it %s the decoder twice (%s); path %s", job.source, job.rel,
                  "crashed" if died.reason == "crashed" else "timed out", died.detail, job.path)
        what = "crashed the decoder" if died.reason == "crashed" else f"took longer than {self._timeout_s:g}s"
        raise InputError(died.reason, f"decoding {what} twice, in two fresh processes ({died.detail})")

    def _decode_once(self, fd: int, size: int, slot: int) -> Outcome:
        """One try; a decoder that cannot even start (no memory, no process slots) is retried."""
        return self._until_it_works(lambda: self._decoder.decode(fd, size, slot, self._timeout_s),
                                    DecoderStartError, 0.5, 30.0)

    def start_decoder(self) -> None:
        """Start the decoder now, before the first input (the daemon is not ready until it runs)."""
        self._decoder.ensure_started()

    def join(self, timeout: float) -> bool:
        done = super().join(timeout)
        self._decoder.stop()  # after the thread: it never stops a decoder in the middle of an input
        return done

    def _acquire(self) -> "np.ndarray | None":
        while self.should_keep_running():
            out = self._pool.acquire(self.poll_s)
            if out is not None:
                return out
        return None

    def _put(self, q: "queue.Queue[FolderInput]", job: FolderInput) -> None:
        while self.should_keep_running():
            try:
                q.put(job, timeout=self.poll_s)
                return
            except queue.Full:
                continue
        # Stopping with the queue full: the input is not acknowledged, so it is picked up on the next start.
