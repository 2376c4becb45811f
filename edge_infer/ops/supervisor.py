"""One supervisor for every stage, and one deadline for the whole shutdown.

Supervision follows Erlang/OTP: a stage that dies is restarted in place when it may be, at most
``max_restarts`` times in ``window_s`` seconds (its restart intensity); a stage that may not be restarted,
or dies more often than that, escalates: the daemon reports itself not alive (``/healthz`` 503, no more
``WATCHDOG=1``) and systemd restarts it whole. A loop that has not beaten for its ``hang_s`` is hung: not
alive either, until it beats again (a Python thread cannot be killed, so it cannot be restarted).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Protocol

from ..lifecycle import Heartbeat, InjectedFault

log = logging.getLogger(__name__)


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
    """Watches every stage the same way; ``check()`` (every main-loop tick) restarts the dead where it may.
    A hang is not logged here: the main loop logs the change of ``healthy()``, naming ``problems()``."""

    def __init__(self, *, max_restarts: int = 5, window_s: float = 60.0,
                 on_restart: Callable[[str], None] = lambda kind: None,
                 give_back: Callable[[Any], None] = lambda job: None,
                 fault_for: Callable[[str], Callable[[Any], None] | None] = lambda kind: None) -> None:
        self.max_restarts, self.window_s = max_restarts, window_s
        self._on_restart, self._give_back, self._fault_for = on_restart, give_back, fault_for
        self.units: list[Supervised] = []
        self._restarts: dict[str, deque[float]] = {}
        self.failed: dict[str, str] = {}  # escalated: stage name -> why; latched until the daemon restarts
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
            if unit.name in self.failed or unit.stopping():
                continue
            if isinstance(unit, Probe):
                unit.check_fault()
            if unit.alive():
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
                try:
                    unit.restart()
                except Exception as e:  # noqa: BLE001 - e.g. its folder gone: the main loop goes on, unhealthy
                    log.exception("cannot restart stage %s", unit.name)
                    self._escalate(unit, f"could not be restarted ({e!r})")

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
