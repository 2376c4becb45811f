"""Decoder processes, seen from the daemon: start one, hand it an input, and tell a reply from a death.

Processes come from multiprocessing's forkserver, never from a fork of the threaded daemon: the server is
a fresh interpreter that has imported only the decoding code (``child``), so each decoder starts in
a few milliseconds and shares those pages with its siblings. A decoder receives the daemon's open
descriptor of each input (``SCM_RIGHTS`` over its Unix socket), so it needs no file system of its own.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.reduction import send_handle
from typing import Any, Protocol, Union

from ..config import PipelineConfig
from ..errors import EdgeInferError
from ..ops.metrics import Metrics
from ..pipeline.tensor_pool import TensorPool
from . import child, preload
from .child import READY, DecoderSettings, decode_one
from .preprocess import PreprocessSpec

log = logging.getLogger(__name__)
START_TIMEOUT_S = 30.0  # a decoder that is not ready by then is killed and the start retried
STOP_S = 1.0
# A decoder's address space: what it has mapped once set up (the interpreter, Pillow, numpy, the tensors),
# plus pipeline.max_decode_mb for the image, plus this for the file's bytes and the interpreter's own churn.
HEADROOM_MB = 64


class DecoderStartError(EdgeInferError):
    """A decoder process could not be started (fork refused, no memory, the forkserver gone)."""


@dataclass(frozen=True)
class Decoded:
    """The decoder's answer: ``error`` is None, or the input's (kind, message)."""

    sha256: str | None
    width: int
    height: int
    seconds: float
    error: tuple[str, str] | None = None


@dataclass(frozen=True)
class Died:
    """The decoder did not answer: ``reason`` is ``crashed`` (it died) or ``timeout`` (it overran)."""

    reason: str
    detail: str


Outcome = Union[Decoded, Died]


def forkserver_context() -> BaseContext:
    """The start method for decoders: a forkserver that preloads the decoding code and nothing else."""
    # The decoders need no threads of their own; OpenBLAS would otherwise size a pool for every core.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([preload.__name__])
    return ctx


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class Decoder:
    """One decoder process and the pipe to it. Used by one thread at a time (its worker)."""

    def __init__(self, *, ctx: BaseContext, settings: DecoderSettings, pool_fd: int, name: str,
                 metrics: Metrics | None = None) -> None:
        self._ctx, self._settings, self._pool_fd, self.name = ctx, settings, pool_fd, name
        self._metrics = metrics
        self._proc: Any = None
        self._conn: Connection | None = None
        self.report: dict[str, Any] = {}  # the sandbox report of the running process
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The running decoder's pid, once it is ready for inputs (None before, and once discarded)."""
        return self._proc.pid if self._proc is not None and self.report else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def ensure_started(self) -> None:
        """A running decoder, started now if there is none. Raises ``DecoderStartError``."""
        if self.alive() and self._conn is not None:
            return
        if self._proc is not None:  # it died between two inputs (killed, the OOM killer): replaced all the same
            detail = describe_exit(self._discard())
            log.warning("%s died between inputs (%s); starting another", self.name, detail)
            self._restarted("crashed")
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=child.main, args=(theirs, self._settings), name=self.name,
                                 daemon=True)
        try:
            proc.start()
        except OSError as e:
            ours.close()
            theirs.close()
            raise DecoderStartError(f"cannot start a decoder process: {e}") from e
        theirs.close()
        self._proc, self._conn = proc, ours
        self.starts += 1
        try:
            send_handle(ours, self._pool_fd, proc.pid)
            if not ours.poll(START_TIMEOUT_S):
                raise DecoderStartError(f"decoder {proc.pid} not ready within {START_TIMEOUT_S:.0f}s")
            tag, _pid, report = ours.recv()
            assert tag == READY
        except (OSError, EOFError, DecoderStartError) as e:
            code = self._discard()
            raise DecoderStartError(f"decoder did not start ({describe_exit(code)}): {e}") from e
        self.report = report
        failed = sorted(name for name, (status, _) in report.items() if status == "failed")
        if self.starts == 1 or failed:
            # The details that matter: what was seen from inside, and why a step did not take effect.
            steps = "; ".join(f"{name} {status}" + (f" ({detail})" if name == "verified" or status != "applied"
                                                    and detail else "") for name, (status, detail) in report.items())
            log.log(logging.ERROR if failed else logging.INFO, "%s (pid %d): sandbox %s%s", self.name, proc.pid,
                    steps, f"; NOT in effect: {', '.join(failed)}" if failed else "")

    def decode(self, fd: int, size: int, slot: int, timeout_s: float) -> Outcome:
        """Hand ``fd`` to the decoder and wait at most ``timeout_s`` for its answer.

        A decoder that dies or overruns is discarded here (killed if need be); the caller starts a new one.
        """
        self.ensure_started()
        assert self._conn is not None and self._proc is not None
        try:
            self._conn.send((slot, size))
            send_handle(self._conn, fd, self._proc.pid)
            if self._conn.poll(timeout_s):
                tag, sha, a, b, seconds, exiting = self._conn.recv()
                if exiting:  # it leaves after this answer (see child.main): a fresh one next time
                    self._discard()
                if tag == "ok":
                    return Decoded(sha, a, b, seconds)
                return Decoded(sha, 0, 0, seconds, error=(a, b))
        except (OSError, EOFError):
            self._restarted("crashed")
            return Died("crashed", describe_exit(self._discard()))
        pid = self._proc.pid
        self._discard()
        self._restarted("timeout")
        return Died("timeout", f"decoder {pid} gave no answer within {timeout_s:g}s; killed")

    def _restarted(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.decoder_restarted(reason)

    def stop(self, timeout_s: float = STOP_S) -> None:
        """Ask the decoder to exit; kill it if it does not within ``timeout_s``."""
        if self._conn is not None and self.alive():
            try:
                self._conn.send(None)
            except OSError:
                pass  # already gone: _discard reaps it
            self._proc.join(timeout_s)
        self._discard()

    def _discard(self) -> int | None:
        """Kill (if need be) and reap the process, close the pipe; its exit code."""
        code = None
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.kill()  # SIGKILL: also ends a stopped (SIGSTOP) or hung one
            self._proc.join(5)
            code = self._proc.exitcode
            if code is not None:
                self._proc.close()
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None
        self.report = {}
        return code


class Decodes(Protocol):
    """What a worker needs of its decoder: a process (``decoders.Decoder``) or this thread (``InThread``)."""

    def ensure_started(self) -> None: ...

    def decode(self, fd: int, size: int, slot: int, timeout_s: float) -> Outcome: ...

    def stop(self) -> None: ...


class InThread:
    """Decoding in the worker's own thread (``pipeline.decoders: thread``): no isolation, no deadline."""

    def __init__(self, settings: DecoderSettings, pool: TensorPool) -> None:
        self._settings, self._pool = settings, pool

    def ensure_started(self) -> None:
        pass

    def decode(self, fd: int, size: int, slot: int, timeout_s: float) -> Outcome:
        tag, sha, a, b, seconds = decode_one(fd, size, self._pool.tensors[slot], self._settings)
        return Decoded(sha, a, b, seconds) if tag == "ok" else Decoded(sha, 0, 0, seconds, error=(a, b))

    def stop(self) -> None:
        pass


def build_decoders(cfg: PipelineConfig, count: int, spec: PreprocessSpec, pool: TensorPool,
                   metrics: Metrics | None = None) -> list[Decodes]:
    """One decoder for each of ``count`` workers, as ``pipeline.decoders`` says."""
    settings = DecoderSettings(spec=spec, max_pixels=cfg.max_pixels, max_bytes=cfg.max_file_bytes,
                               pool_layout=pool.layout(),
                               decode_options={"formats": cfg.formats, "max_decode_mb": cfg.max_decode_mb},
                               memory_headroom_bytes=(cfg.max_decode_mb + HEADROOM_MB) << 20,
                               sandbox=cfg.decoders == "process")
    if cfg.decoders == "thread":
        return [InThread(settings, pool) for _ in range(count)]
    assert pool.fd is not None, "decoder processes need the tensors in a memfd (Linux)"
    ctx = forkserver_context()
    return [Decoder(ctx=ctx, settings=settings, pool_fd=pool.fd, name=f"decoder-{i}", metrics=metrics)
            for i in range(count)]
