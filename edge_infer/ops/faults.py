"""Fault injection for tests: every hook is off unless ``EDGE_INFER_FAULTS`` turns it on.

Some failures cannot be caused from outside on demand: an input that takes the daemon itself down (an
out-of-memory kill of the whole service, a crash in a library of the daemon's own process) is the one the
in-flight journal exists for. A test names the input and the daemon dies as it starts on it, by SIGKILL,
exactly as the kernel would kill it. ``cli`` reads the variable once; nothing else reads it.

Every stage's death is tested through one hook: ``kill_stage=writer`` raises ``InjectedFault`` inside the
writer's loop (at its next ``should_keep_running()``), ``kill_stage=writer:3`` does so three times (to
exceed the restart intensity), ``kill_busy=preprocess`` only while the stage holds a job (to lose it);
``hang_stage=reloader`` wedges it for good, as a call that never returns would (shutdown must give up on it).
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
import threading
from typing import Any, Callable, Mapping

from ..errors import ConfigError
from ..lifecycle import InjectedFault


@dataclass(frozen=True)
class Faults:
    crash_daemon_on: str | None = None  # SIGKILL the daemon as it starts decoding an input whose name has this
    crash_after_commit: str | None = None  # SIGKILL it once such an input's record is durable, before its move
    kill_stage: str | None = None  # KIND[:N]: that kind of stage dies N times (default 1), e.g. "writer:3"
    kill_busy: str | None = None  # the same, but only while the stage holds a job in hand
    hang_stage: str | None = None  # KIND (a Stage's, not a probed thread's): wedges in its loop for good

    @classmethod
    def from_environ(cls, env: Mapping[str, str]) -> "Faults":
        """``EDGE_INFER_FAULTS="crash_daemon_on=poison"`` (comma-separated ``name=value`` pairs)."""
        values: dict[str, str] = {}
        for part in filter(None, env.get("EDGE_INFER_FAULTS", "").split(",")):
            name, _, value = part.partition("=")
            if name not in cls.__dataclass_fields__ or not value:
                raise ConfigError("EDGE_INFER_FAULTS", f"unknown fault {part!r}")
            values[name] = value
        return cls(**values)

    def starting(self, rel: str) -> None:
        """Called as the daemon starts decoding the input ``rel``."""
        if self.crash_daemon_on is not None and self.crash_daemon_on in rel:
            os.kill(os.getpid(), signal.SIGKILL)

    def committed(self, rel: str) -> None:
        """Called once the record of the input ``rel`` is durable, before the input is acknowledged."""
        if self.crash_after_commit is not None and self.crash_after_commit in rel:
            os.kill(os.getpid(), signal.SIGKILL)

    def stage_fault(self, kind: str) -> Callable[[Any], None] | None:
        """The hook for stages of ``kind`` (None when no fault names it): raises while deaths are left."""
        for spec, busy in ((self.kill_stage, False), (self.kill_busy, True)):
            name, _, count = (spec or "").partition(":")
            if name == kind:
                return _Killer(kind, int(count or 1), busy)
        if self.hang_stage == kind:
            return lambda stage: threading.Event().wait(3600)
        return None


class _Killer:
    """Shared by every stage of one kind: N deaths in all, whichever stage of the kind checks first."""

    def __init__(self, kind: str, deaths: int, busy: bool) -> None:
        self.kind, self.left, self.busy = kind, deaths, busy
        self._lock = threading.Lock()

    def __call__(self, stage: Any) -> None:
        if self.busy and not stage.in_hand:
            return
        with self._lock:
            if self.left <= 0:
                return
            self.left -= 1
        raise InjectedFault(f"injected fault: kill_stage={self.kind}")
