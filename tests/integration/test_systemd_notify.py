import logging
import os
import socket
import uuid

import pytest

from edge_infer.ops.systemd import Notifier

TIMEOUT = 2.0


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(TIMEOUT)
    return sock


def _recv_all(sock: socket.socket) -> list[str]:
    got = []
    sock.settimeout(0.2)  # everything was sent before we read; a short wait proves there is nothing more
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except socket.timeout:
        return got


@pytest.fixture
def path_socket(tmp_path):
    path = str(tmp_path / "n.sock")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    sock = _receiver(path)
    yield path, sock
    sock.close()


def test_sends_exactly_the_datagrams_to_a_path_socket(path_socket):
    path, sock = path_socket
    n = Notifier(path)
    assert n.enabled
    assert n.ready() and n.status("warming up\nstill") and n.watchdog() and n.stopping()
    assert _recv_all(sock) == ["READY=1", "STATUS=warming up still", "WATCHDOG=1", "STOPPING=1"]


def test_notify_joins_fields_one_per_line(path_socket):
    path, sock = path_socket
    Notifier(path).notify(READY=1, STATUS="a\r\nb")
    assert sock.recv(4096).decode() == "READY=1\nSTATUS=a b"


def test_abstract_socket_name():
    name = f"edge-infer-test-{os.getpid()}-{uuid.uuid4().hex}"
    sock = _receiver("\0" + name)
    try:
        n = Notifier("@" + name)
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_from_environ_without_notify_socket_is_a_silent_noop():
    n = Notifier.from_environ({"WATCHDOG_USEC": "2000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert n.ready() is False and n.status("x") is False and n.watchdog() is False


def test_from_environ_reads_socket_and_watchdog(path_socket):
    path, sock = path_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000"})
    assert n.enabled and n.watchdog_interval == pytest.approx(1.5)
    n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    mine = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000",
                                  "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == pytest.approx(1.5)
    assert Notifier.from_environ({"NOTIFY_SOCKET": path}).watchdog_interval is None


def test_watchdog_pid_of_another_process_disables_the_watchdog(path_socket):
    path, _ = path_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000",
                               "WATCHDOG_PID": str(os.getpid() + 1)})
    assert n.enabled
    assert n.watchdog_interval is None


def test_missing_socket_does_not_raise_and_warns_once(tmp_path, caplog):
    n = Notifier(str(tmp_path / "absent.sock"))
    with caplog.at_level(logging.DEBUG, logger="edge_infer.ops.systemd"):
        assert n.ready() is False
        assert n.status("x") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "absent.sock" in warnings[0].getMessage()
