"""sd_notify(3) in plain stdlib: READY, STATUS, WATCHDOG and STOPPING datagrams to ``$NOTIFY_SOCKET``."""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Mapping

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
