"""The one HTTP port: ``/metrics``, ``/healthz`` and ``/readyz`` on the stdlib threading server."""
from __future__ import annotations

import logging
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

# How often the serve loop wakes to look at the stop flag; bounds how long stop() takes to take effect.
POLL_SECONDS = 0.2
_TEXT = "text/plain; charset=utf-8"


def _probe(ok: bool, ok_body: bytes, fail_body: bytes) -> tuple[int, str, bytes]:
    return (200, _TEXT, ok_body) if ok else (503, _TEXT, fail_body)


class _Server(ThreadingHTTPServer):
    # Per-request threads must never keep the process alive; the handler timeout bounds their life anyway.
    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: CollectorRegistry,
                 is_alive: Callable[[], bool], is_ready: Callable[[], bool]) -> None:
        # The handler reads these from self.server, so each server carries its own and no globals exist.
        self.registry = registry
        self.is_alive = is_alive
        self.is_ready = is_ready
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.timeout = POLL_SECONDS

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup with no timeout that can hang
        # for a long time on a device without working DNS; the name is only used for CGI, which we don't do.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: object, client_address: object) -> None:
        # A scraper that hangs up or stalls is routine; anything else is a bug worth a traceback.
        # (The stdlib default prints to stderr, bypassing logging.)
        level = logging.DEBUG if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)) else logging.WARNING
        log.log(level, "HTTP request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Socket timeout per connection: a client that stops sending cannot hold a thread forever.
    timeout = 10

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry)
            elif path == "/healthz":
                status, ctype, body = _probe(self.server.is_alive(), b"ok\n", b"unhealthy\n")
            elif path == "/readyz":
                status, ctype, body = _probe(self.server.is_ready(), b"ready\n", b"not ready\n")
            else:
                status, ctype, body = 404, _TEXT, b"not found\n"
        except Exception:  # noqa: BLE001 - a failing probe or collector must answer 500, not drop the connection
            log.exception("HTTP %s failed", path)
            status, ctype, body = 500, _TEXT, b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's parameter name
        # Scrapes arrive every few seconds; at info level they would drown the daemon's own log.
        log.debug("%s " + format, self.address_string(), *args)


class HttpServer:
    """The metrics and probe endpoint as a stage: ``start()``, ``stop()``, ``join(timeout)``, ``healthy()``."""

    def __init__(self, *, host: str, port: int, registry: CollectorRegistry,
                 is_alive: Callable[[], bool], is_ready: Callable[[], bool]) -> None:
        self.host = host
        self._requested_port = port
        self._registry = registry
        self._is_alive = is_alive
        self._is_ready = is_ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (the OS's pick when the config says 0); the configured one before start()."""
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve; a bind failure raises OSError naming host:port (the caller treats it as fatal)."""
        try:
            self._server = _Server((self.host, self._requested_port), self._registry,
                                   self._is_alive, self._is_ready)
        except OSError as e:
            message = f"cannot listen on {self.host}:{self._requested_port}: {e.strerror or e}"
            raise (OSError(e.errno, message) if e.errno is not None else OSError(message)) from e
        # Not a daemon thread: shutdown is explicit via stop()/join(), and the conftest guard checks it.
        self._thread = threading.Thread(target=self._run, name="http", daemon=False)
        self._thread.start()
        log.info("serving /metrics, /healthz, /readyz on %s:%d", self.host, self.port)

    def _run(self) -> None:
        server = self._server
        assert server is not None
        try:
            # handle_request() waits at most server.timeout, so the stop flag is seen within POLL_SECONDS;
            # serve_forever()/shutdown() would instead make stop() an unbounded wait.
            while not self._stop.is_set():
                server.handle_request()
        finally:
            server.server_close()

    def stop(self) -> None:
        """Ask the serve loop to end; returns at once (use join to wait)."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the serve thread; True when it has ended (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def healthy(self) -> bool:
        return self.alive() and not self._stop.is_set()

    def alive(self) -> bool:
        """The serve thread runs (the supervisor watches it: a dead one stops WATCHDOG=1)."""
        return self._thread is not None and self._thread.is_alive()
