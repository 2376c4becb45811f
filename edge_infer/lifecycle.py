"""Stage base class, its supervisor, and signal capture: the lifecycle pieces every long-running part shares.

Supervision follows Erlang/OTP: a stage that dies is restarted in place when it may be, at most
``max_restarts`` times in ``window_s`` seconds (its restart intensity); a stage that may not be restarted,
or dies more often than that, escalates: the daemon reports itself not alive (``/healthz`` 503, no more
``WATCHDOG=1``) and systemd restarts it whole. A loop that has not beaten for its ``hang_s`` is hung: not
alive either, until it beats again (a Python thread cannot be killed, so it cannot be restarted).
"""
from __future__ import annotations

import logging
import random
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator, Protocol

log = logging.getLogger(__name__)


class InjectedFault(BaseException):
    """Raised inside a stage's loop by the fault-injection hook (tests only: ``EDGE_INFER_FAULTS=kill_stage=``).

    A BaseException, as an unforeseen death is: the stages' own ``except Exception`` (one bad input must not
    stop a worker) would otherwise turn it into a failed input."""


class Stage:
    """A thread with a stop event: ``start()``, ``stop()``, ``join(timeout) -> bool``, ``healthy()``.

    Subclasses implement ``run()`` as a loop that checks ``should_keep_running()`` and never blocks for
    longer than ``poll_s`` at a time, so that ``stop()`` takes effect within that bound. Each check beats
    ``heartbeat``; jobs a stage holds outside any queue are listed in ``in_hand``, so that if it dies they
    are given back (see ``Supervisor``) rather than counted in flight forever.
    """

    poll_s = 0.2
    kind = "stage"  # the supervisor's metric label: a bounded set of stage kinds, never a source name
    restartable = True  # may the supervisor start run() again after it died?
    hang_s: float | None = None  # not beating for this long is hung (None: not checked)

    def __init__(self, name: str) -> None:
        self.name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: BaseException | None = None
        self.heartbeat = Heartbeat()
        self.in_hand: list[Any] = []
        self.fault: Callable[[Stage], None] | None = None  # the fault-injection hook: None unless a test asks

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()

    def restart(self) -> None:
        """Run the loop again on a new thread after a death (what a subclass needs first: override, call this)."""
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
        """One turn of the loop: a heartbeat, and the fault hook (only on this stage's own thread: a folder
        source's observer thread also hands files over through ``should_keep_running``)."""
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


def backoff_s(attempt: int, lo: float, hi: float, rnd: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnecting after ``attempt`` consecutive failures: doubling, capped, jittered
    (so that cameras, or a fleet of devices, that failed together do not all reconnect in the same instant)."""
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


class Supervised(Protocol):
    """What the supervisor watches: a ``Stage``, or a ``Probe`` on a thread the daemon does not run itself."""

    kind: str
    name: str
    restartable: bool
    hang_s: float | None
    heartbeat: Heartbeat
    in_hand: list[Any]
    fault: Callable[[Any], None] | None

    def alive(self) -> bool: ...
    def stopping(self) -> bool: ...
    def restart(self) -> None: ...


class Probe:
    """A thread the daemon does not own (watchdog's observer, the HTTP server) seen as a stage: ``alive``
    says whether it runs, ``restart`` (None: not restartable) replaces it, ``inject`` kills it for a test."""

    hang_s: float | None = None

    def __init__(self, kind: str, name: str, alive: Callable[[], bool], restart: Callable[[], None] | None = None,
                 inject: Callable[[], None] | None = None, stopping: Callable[[], bool] = lambda: False) -> None:
        self.kind, self.name, self.alive, self.stopping = kind, name, alive, stopping
        self._restart, self._inject = restart, inject
        self.restartable = restart is not None
        self.heartbeat = Heartbeat()
        self.in_hand: list[Any] = []
        self.fault: Callable[[Any], None] | None = None

    def restart(self) -> None:
        assert self._restart is not None
        self._restart()

    def check_fault(self) -> None:
        """Run the fault hook as the probed thread would, and kill that thread for real if it fires."""
        if self.fault is None or self._inject is None:
            return
        try:
            self.fault(self)
        except InjectedFault:
            self._inject()


class Supervisor:
    """Watches every stage the same way; ``check()`` (every main-loop tick) restarts the dead where it may."""

    def __init__(self, *, max_restarts: int = 5, window_s: float = 60.0,
                 on_restart: Callable[[str], None] = lambda kind: None,
                 give_back: Callable[[Any], None] = lambda job: None,
                 fault_for: Callable[[str], Callable[[Any], None] | None] = lambda kind: None) -> None:
        self.max_restarts, self.window_s = max_restarts, window_s
        self._on_restart, self._give_back, self._fault_for = on_restart, give_back, fault_for
        self.units: list[Supervised] = []
        self._restarts: dict[str, deque[float]] = {}
        self.failed: dict[str, str] = {}  # escalated: stage name -> why; latched until the daemon restarts
        self._hung_logged: set[str] = set()
        self._hooks: dict[str, Callable[[Any], None] | None] = {}

    def watch(self, unit: Supervised) -> None:
        self.units.append(unit)
        self._restarts[unit.name] = deque()
        if unit.kind not in self._hooks:  # one hook per kind: "writer:3" is three deaths in all, not per stage
            self._hooks[unit.kind] = self._fault_for(unit.kind)
        unit.fault = self._hooks[unit.kind]

    def check(self) -> None:
        now = time.monotonic()
        for unit in self.units:
            if isinstance(unit, Probe):
                unit.check_fault()
            if unit.name in self.failed or unit.stopping() or unit.alive():
                continue
            why = getattr(unit, "failure", None)
            self._lost(unit)
            history = self._restarts[unit.name]
            while history and now - history[0] > self.window_s:
                history.popleft()
            if not unit.restartable:
                self._escalate(unit, f"died ({why!r}) and is not restarted in place")
            elif len(history) >= self.max_restarts:
                self._escalate(unit, f"died {len(history) + 1} times within {self.window_s:g}s ({why!r})")
            else:
                history.append(now)
                self._on_restart(unit.kind)
                log.warning("stage %s died (%r); restarting it (%d of at most %d within %gs)", unit.name, why,
                            len(history), self.max_restarts, self.window_s)
                unit.restart()
        for name in self.hung():
            if name not in self._hung_logged:
                self._hung_logged.add(name)
                log.error("stage %s is hung (no heartbeat for its limit); systemd's watchdog is no longer fed",
                          name)
        self._hung_logged &= set(self.hung())

    def _lost(self, unit: Supervised) -> None:
        """Jobs the dead stage held: given back, so each is redone now rather than counted in flight forever."""
        jobs, unit.in_hand = list(unit.in_hand), []
        for job in jobs:
            try:
                self._give_back(job)
            except Exception:  # noqa: BLE001 - the input stays in place and is redone at the next start
                log.exception("cannot give back a job stage %s held", unit.name)

    def _escalate(self, unit: Supervised, why: str) -> None:
        self.failed[unit.name] = why
        log.error("stage %s %s: the daemon reports itself not alive (/healthz 503, no WATCHDOG=1), so that "
                  "systemd restarts it", unit.name, why)

    def hung(self) -> list[str]:
        return [u.name for u in self.units
                if u.hang_s is not None and not u.stopping() and u.alive() and u.heartbeat.age() > u.hang_s]

    def problems(self) -> list[str]:
        """What keeps the daemon from being alive: escalated deaths, dead stages not yet restarted, hangs."""
        dead = [f"{u.name} died" for u in self.units
                if u.name not in self.failed and not u.restartable and not u.stopping() and not u.alive()]
        return [f"{n} {why}" for n, why in self.failed.items()] + dead + [f"{n} hung" for n in self.hung()]

    def healthy(self) -> bool:
        return not self.problems()


# Shutdown: the drain gets shutdown.drain_timeout_s, then every stage's join shares this margin (each stops
# within its poll_s; the MQTT goodbye takes up to 2 s). The unit's TimeoutStopSec= must cover both.
SHUTDOWN_MARGIN_S = 5.0
FORCED_GRACE_S = 1.0  # after a second signal: what is left for the joins, however long the deadline was


class Deadline:
    """One monotonic deadline for the whole shutdown; a second signal (``force``) cuts it short."""

    def __init__(self, seconds: float, force: threading.Event) -> None:
        self._at, self._force, self._cut = time.monotonic() + seconds, force, False

    def left(self) -> float:
        if self._force.is_set() and not self._cut:
            self._cut = True
            self._at = min(self._at, time.monotonic() + FORCED_GRACE_S)
        return max(0.0, self._at - time.monotonic())

    def join(self, stage: Any) -> bool:
        """``stage.join`` in short slices, so that a second signal meanwhile cuts the wait too."""
        while not stage.join(min(0.1, self.left())):
            if self.left() <= 0:
                return False
        return True


class ShutdownFlags:
    """Set by signal handlers (which do nothing else): first SIGTERM/SIGINT drains, a second one forces."""

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
    """Route SIGTERM, SIGINT and SIGHUP to ``flags`` for the duration; restore the old handlers after."""
    signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, flags.handle) for s in signals}
    try:
        yield flags
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
