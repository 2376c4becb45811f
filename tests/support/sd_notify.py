"""What a daemon told systemd through NOTIFY_SOCKET (the ``notify_socket`` fixture binds one)."""
from __future__ import annotations

import socket
import time


def recv_all(sock: socket.socket, until: str, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.extend(sock.recv(4096).decode().splitlines())
        except socket.timeout:
            continue
        if until in got:
            return got
    raise AssertionError(f"no {until!r} within {timeout}s; got {got}")
