"""Stage base class, heartbeat and signal capture: the lifecycle pieces every long-running part
shares (supervised by ``ops.supervisor.Supervisor``)."""
from __future__ import annotations

import logging
import random
import signal
import threading
import time
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)


class InjectedFault(BaseException):
    """Raised inside a stage's loop by the fault-injection hook (tests only:
    ``EDGE_INFER_FAULTS=kill_stage=``).

    A BaseException, as an unforeseen death is: the stages' own ``except Exception`` (one bad input
    must not stop a worker) would otherwise turn it into a failed input."""


class Stage:
    """A thread with a stop event: ``start()``, ``stop()``, ``join(timeout) -> bool``,
    ``healthy()``.

    Subclasses implement ``run()`` as a loop that checks ``should_keep_running()`` and never blocks
    for longer than ``poll_s`` at a time, so that ``stop()`` takes effect within that bound. Each
    check beats ``heartbeat``; jobs a stage holds outside any queue are listed in ``in_hand``, so
    that if it dies they are given back (see ``ops.supervisor.Supervisor``) rather than counted in
    flight forever.
    """

    poll_s = 0.2
    kind = "stage"  # the supervisor's metric label: a small set of stage kinds, never a source name
    restartable = True  # may the supervisor start run() again after it died?
    hang_s: float | None = None  # not beating for this long is hung (None: not checked)

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        self.heartbeat = Heartbeat()
        self.in_hand: list[Any] = []
        # the fault-injection hook: None unless a test asks
        self.fault: Callable[[Stage], None] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def restart(self) -> None:
        """Run the loop again on a new thread after a death (what a subclass needs first: override,
        call this)."""
        self.failure, self.in_hand = None, []
        self.heartbeat.beat()
        Stage.start(self)  # only the thread: a subclass's start() also arms what outlives a death

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as e:  # noqa: BLE001 - recorded, logged and surfaced through healthy()
            self.failure = e
            log.exception("stage %s died", self.name)

    def run(self) -> None:
        raise NotImplementedError

    def should_keep_running(self) -> bool:
        self._turn()
        return not self._stop.is_set()

    def _turn(self) -> None:
        """One turn of the loop: a heartbeat, and the fault hook (only on this stage's own thread: a
        folder source's observer thread also hands files over through ``should_keep_running``)."""
        self.heartbeat.beat()
        if self.fault is not None and threading.current_thread() is self._thread:
            self.fault(self)

    def stop(self) -> None:
        self._stop.set()

    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when asked to stop meanwhile."""
        self._turn()
        return self._stop.wait(seconds)

    def join(self, timeout: float) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def healthy(self) -> bool:
        return self.alive() and self.failure is None


def backoff_s(attempt: int, lo: float, hi: float,
              rnd: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnecting after ``attempt`` consecutive failures: doubling, capped,
    jittered (so that cameras, or a fleet of devices, that failed together do not all reconnect in
    the same instant)."""
    cap = min(hi, lo * 2 ** min(attempt, 30))
    return lo + (cap - lo) * rnd()


class Heartbeat:
    """A monotonic timestamp a loop refreshes on each turn, so a supervisor can tell a hung loop."""

    def __init__(self) -> None:
        self._at = time.monotonic()

    def beat(self) -> None:
        self._at = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._at


class ShutdownFlags:
    """Set by signal handlers (which do nothing else): first SIGTERM/SIGINT drains, a second one
    forces."""

    def __init__(self) -> None:
        self.should_exit = threading.Event()
        self.force_exit = threading.Event()
        self.reload = threading.Event()

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload.set()
        elif self.should_exit.is_set():
            self.force_exit.set()
        else:
            self.should_exit.set()


@contextmanager
def capture_signals(flags: ShutdownFlags) -> Iterator[ShutdownFlags]:
    """Route SIGTERM, SIGINT and SIGHUP to ``flags`` for the duration; restore the old handlers
    after."""
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, flags.handle) for s in signals}
    try:
        yield flags
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
