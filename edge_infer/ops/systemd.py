"""sd_notify(3) in plain stdlib: READY, STATUS, WATCHDOG and STOPPING datagrams to ``$NOTIFY_SOCKET``; and
the unit's stop timeout, which the shutdown deadline must fit in (``check-config``)."""
from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import threading
from pathlib import Path
from typing import Mapping

from ..errors import ConfigError
from .supervisor import SHUTDOWN_MARGIN_S

log = logging.getLogger(__name__)

# A notify must never stall the loop that sends it (the watchdog ping comes from the inference side).
SEND_TIMEOUT_SECONDS = 1.0


class Notifier:
    """Talks to systemd's notify socket; every method is a no-op when not run under ``Type=notify``.

    Send failures are logged (once at warning) and swallowed: losing a status line must not kill the daemon.
    """

    def __init__(self, socket_path: str | None, watchdog_usec: int | None = None) -> None:
        self._address: str | None = None
        if socket_path:
            if socket_path.startswith("@"):
                # Abstract namespace: systemd spells the leading NUL as '@'.
                self._address = "\0" + socket_path[1:]
            elif socket_path.startswith("/"):
                self._address = socket_path
            else:
                log.warning("NOTIFY_SOCKET=%r is not a unix socket address; systemd notifications are off",
                            socket_path)
        self.socket_path = socket_path if self._address is not None else None
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._warned = False
        self._warn_lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Notifier":
        """From ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (the caller passes os.environ)."""
        usec: int | None = None
        raw_usec = environ.get("WATCHDOG_USEC")
        raw_pid = environ.get("WATCHDOG_PID")
        if raw_usec:
            try:
                usec = int(raw_usec)
                # WATCHDOG_PID names the process systemd watches; a child that inherited the environment
                # must not ping on its parent's behalf.
                if raw_pid and int(raw_pid) != os.getpid():
                    usec = None
            except ValueError:
                log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", raw_usec, raw_pid)
                usec = None
        return cls(environ.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half the timeout, as sd_watchdog_enabled(3) advises), or None."""
        if self._watchdog_usec is None or not self.enabled:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self) -> bool:
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def notify(self, **fields: object) -> bool:
        """``notify(READY=1, STATUS="...")``; values are flattened to one line so they cannot add fields."""
        lines = [f"{k}={' '.join(str(v).splitlines()).strip()}" for k, v in fields.items()]
        return self.send("\n".join(lines))

    def send(self, message: str) -> bool:
        """Send one raw datagram; True if it went out, False if disabled or it failed."""
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_SECONDS)
                sock.sendto(message.encode("utf-8"), self._address)
            return True
        except OSError as e:
            with self._warn_lock:
                first, self._warned = not self._warned, True
            log.log(logging.WARNING if first else logging.DEBUG,
                    "cannot notify systemd at %s: %s", self.socket_path, e)
            return False


# systemd.time(7) time spans: "30", "30s", "1min 30s", "2.5s", "500ms", "infinity".
_SPAN_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0,
               "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0,
               "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0}


def parse_timespan(text: str) -> float:
    """Seconds (``inf`` for "infinity"); ValueError for what systemd would not accept either."""
    text = text.strip()
    if text == "infinity":
        return float("inf")
    total, found = 0.0, False
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", text):
        total += float(number) * _SPAN_UNITS[unit or "s"]
        found = True
    if not found or re.sub(r"[0-9.]+\s*[a-z]*", "", text).strip():
        raise ValueError(f"not a time span: {text!r}")
    return total


def unit_stop_timeout(unit_file: Path) -> float | None:
    """The unit file's TimeoutStopSec= (or TimeoutSec=, which sets it too); the last one wins; None: unset."""
    value: str | None = None
    for line in unit_file.read_text().splitlines():
        key, sep, v = line.strip().partition("=")
        if sep and key.strip() in ("TimeoutStopSec", "TimeoutSec"):
            value = v
    return None if value is None else parse_timespan(value)


def installed_stop_timeout(unit: str = "edge-infer.service") -> float | None:
    """The installed unit's TimeoutStopSec as systemd has it (drop-ins included); None: no such unit here."""
    try:
        r = subprocess.run(["systemctl", "show", unit, "--property=LoadState,TimeoutStopUSec"],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    props = dict(line.partition("=")[::2] for line in r.stdout.splitlines())
    if r.returncode != 0 or props.get("LoadState") != "loaded" or "TimeoutStopUSec" not in props:
        return None
    return parse_timespan(props["TimeoutStopUSec"])


def check_stop_timeout(drain_s: float, unit: Path | None = None) -> None:
    """systemd kills the daemon at TimeoutStopSec: it must cover the drain and the joins after it."""
    try:
        timeout = unit_stop_timeout(unit) if unit is not None else installed_stop_timeout()
    except (OSError, ValueError) as e:
        raise ConfigError("--unit", str(e)) from e
    if timeout is not None and timeout < drain_s + SHUTDOWN_MARGIN_S:
        raise ConfigError("shutdown.drain_timeout_s", f"{drain_s:g}s plus {SHUTDOWN_MARGIN_S:g}s for the joins "
                          f"exceeds the unit's TimeoutStopSec={timeout:g}s ({unit or 'edge-infer.service'}): "
                          "systemd would kill the drain; lower it or raise TimeoutStopSec")
