"""Fault injection for tests: every hook is off unless ``EDGE_INFER_FAULTS`` turns it on.

Some failures cannot be caused from outside on demand: an input that takes the daemon itself down (an
out-of-memory kill of the whole service, a crash in a library of the daemon's own process) is the one the
in-flight journal exists for. A test names the input and the daemon dies as it starts on it, by SIGKILL,
exactly as the kernel would kill it. ``cli`` reads the variable once; nothing else reads it.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Mapping

from ..errors import ConfigError


@dataclass(frozen=True)
class Faults:
    crash_daemon_on: str | None = None  # SIGKILL the daemon as it starts decoding an input whose name has this
    crash_after_commit: str | None = None  # SIGKILL it once such an input's record is durable, before its move

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
