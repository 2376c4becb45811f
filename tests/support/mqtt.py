"""A real Mosquitto broker on loopback and a real paho subscriber, for the MQTT sink's tests."""
from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.support.ci import skip_unless_ci
from tests.support.daemon import free_port, wait_for


def restartable_port() -> int:
    """A free port below the kernel's ephemeral range, for a broker that is stopped and started again.

    A port from that range can be taken while the broker is down: the daemon and the subscriber keep
    reconnecting to it, and a connect() given that very port as its source connects to itself (TCP
    simultaneous open). The restarted broker then fails with "Address already in use".
    """
    import random

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100):
        port = random.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def mosquitto_path() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        skip_unless_ci("needs the mosquitto broker (Debian package mosquitto; .ci/install-system-deps installs it)")
    return path


class Broker:
    """Mosquitto with persistence, so a subscriber's session and queued messages survive a broker restart."""

    def __init__(self, folder: Path, tls: dict[str, Path] | None = None,
                 logins: dict[str, str] | None = None) -> None:
        self.folder, self.port = folder, restartable_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        # user: run as whoever runs the tests (as root, Mosquitto would switch to "mosquitto" and lose tmp_path).
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence true",
                 f"persistence_location {folder}/",
                 "autosave_interval 1", "log_dest stderr", "log_type error", "log_type warning",
                 "log_type notice"]  # notice: each client's connection, under its client id
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}",
                      "require_certificate true"]
        if logins:
            passwd = folder / "passwd"
            passwd.write_text("".join(f"{user}:{pw}\n" for user, pw in logins.items()))
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"  # in Debian's mosquitto
            subprocess.run([tool, "-U", str(passwd)], check=True, capture_output=True, timeout=30)  # hashes in place
            lines.append(f"password_file {passwd}")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = folder / "mosquitto.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([mosquitto_path(), "-c", str(self.conf)], stdout=log, stderr=log)

        def accepting() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(accepting, 20, "mosquitto to listen")

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence database on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def hang(self) -> None:
        """SIGSTOP: the connection stays open but nothing is read or acknowledged."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: whatever it had not saved (autosave_interval 1) is gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(15)
        self.proc = None

    def __enter__(self) -> "Broker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Subscriber:
    """A persistent QoS 1 session on ``edge-infer/#`` (or ``topics``): what a fleet's collector looks like;
    ``clean``: a fresh session, which is sent the retained messages as it subscribes."""

    def __init__(self, port: int, tls: dict[str, Path] | None = None,
                 login: tuple[str, str] | None = None, client_id: str = "test-collector",
                 topics: tuple[str, ...] = ("edge-infer/#",), clean: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool, int]] = []  # topic, payload, retain flag, QoS
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean)
        self.client.reconnect_delay_set(0.2, 1)
        if login:
            self.client.username_pw_set(*login)
        if tls:
            self.client.tls_set(ca_certs=str(tls["ca"]), certfile=str(tls["client_cert"]),
                                keyfile=str(tls["client_key"]))
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.port = port

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain), msg.qos))

    def __enter__(self) -> "Subscriber":
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "no SUBACK"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def results(self, topic: str) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _, _ in self.messages if t == topic]

    def last(self, topic: str) -> bytes | None:
        with self._lock:
            got = [p for t, p, _, _ in self.messages if t == topic]
        return got[-1] if got else None

    def received(self, topic: str) -> list[tuple[bytes, bool, int]]:
        """(payload, retain flag, QoS) of each message on ``topic``: a retained one arrives flagged on subscribing."""
        with self._lock:
            return [(p, r, q) for t, p, r, q in self.messages if t == topic]

    def first_arrivals(self, topic: str) -> list[str]:
        """Input sha256s in order of first arrival (QoS 1 may repeat a message; a repeat is told by its sha256)."""
        seen: list[str] = []
        for r in self.results(topic):
            if r["input_sha256"] not in seen:
                seen.append(r["input_sha256"])
        return seen


def make_tls(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with the openssl CLI."""
    folder.mkdir(parents=True, exist_ok=True)
    f = {k: folder / n for k, n in (("ca", "ca.crt"), ("ca_key", "ca.key"), ("cert", "server.crt"),
                                      ("key", "server.key"), ("client_cert", "client.crt"),
                                      ("client_key", "client.key"))}

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edge-infer test CA",
        "-keyout", str(f["ca_key"]), "-out", str(f["ca"]))
    for name, cn, ext in (("", "127.0.0.1", "subjectAltName=IP:127.0.0.1"), ("client_", "device-1", None)):
        csr = folder / f"{name}req.csr"
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout",
            str(f[f"{name}key"] if name else f["key"]), "-out", str(csr))
        extra = []
        if ext:
            (folder / "ext.cnf").write_text(ext + "\n")
            extra = ["-extfile", str(folder / "ext.cnf")]
        run("x509", "-req", "-in", str(csr), "-CA", str(f["ca"]), "-CAkey", str(f["ca_key"]), "-CAcreateserial",
            "-days", "2", "-out", str(f[f"{name}cert"] if name else f["cert"]), *extra)
    return f


def openssl_or_skip() -> None:
    if shutil.which("openssl") is None:
        skip_unless_ci("needs the openssl command to make a test CA")
