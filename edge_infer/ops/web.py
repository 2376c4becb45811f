"""The one HTTP port: ``/metrics``, ``/healthz`` and ``/readyz`` on the stdlib threading server.

Fit for a network (see ``web_config``): optional TLS and basic auth, at most ``max_connections`` served at
once (more are refused at once, not queued), and ``request_timeout_s`` to read a request from the first byte
of the TLS handshake to the end of its headers, however slowly it trickles in.
"""
from __future__ import annotations

import errno
import logging
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from ..errors import ConfigError
from .web_auth import BasicAuth
from .web_config import LiveWebConfig, WebConfig, load_web_config

log = logging.getLogger(__name__)

# How often the serve loop wakes to look at the stop flag and the read deadlines; bounds how long stop()
# takes to take effect and how late past request_timeout_s a slow client is dropped.
POLL_SECONDS = 0.2
_TEXT = "text/plain; charset=utf-8"
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
         b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n")


def _probe(ok: bool, ok_body: bytes, fail_body: bytes) -> tuple[int, str, bytes]:
    return (200, _TEXT, ok_body) if ok else (503, _TEXT, fail_body)


class _Conn:
    """One connection being served: its socket (the TLS one once wrapped) and its read deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline
        self.read = False  # the request has been read: the deadline no longer applies


class _Server(ThreadingHTTPServer):
    # Per-request threads must never keep the process alive; the read deadline bounds their life anyway.
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: HttpServer) -> None:
        # The handler reads these from self.server, so each server carries its own and no globals exist.
        self.registry = owner.registry
        self.is_alive = owner.is_alive
        self.is_ready = owner.is_ready
        self.refused = owner.refused
        self.web, self.auth = owner.web, BasicAuth()
        self.max_connections, self.request_timeout_s = owner.max_connections, owner.request_timeout_s
        self.conns: dict[int, _Conn] = {}
        self.conns_lock = threading.Lock()
        self._warned_at = -1e9
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

    def refuse(self, reason: str, client: Any) -> None:
        self.refused.labels(reason).inc()
        if reason == "busy" and time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()  # a flood would otherwise log one line per connection
            log.warning("HTTP: %d connections open, refusing more (metrics.max_connections; logged once a "
                        "minute, counted in edge_infer_http_refused_total)", self.max_connections)
        log.debug("HTTP connection from %s refused: %s", client, reason)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Admitted or refused here, on the accept loop, before a thread exists: a flood costs no threads.
        with self.conns_lock:
            admitted = len(self.conns) < self.max_connections
            if admitted:
                self.conns[id(request)] = _Conn(request, time.monotonic() + self.request_timeout_s)
        if admitted:
            try:
                super().process_request(request, client_address)
            except BaseException:  # no thread to free the slot (it could not start): free it here
                with self.conns_lock:
                    self.conns.pop(id(request), None)
                raise
            return
        self.refuse("busy", client_address)
        if self.web is None or not self.web.tls:  # a TLS client could not read a plain answer
            try:
                request.setblocking(False)  # a fresh socket's send buffer is empty: this never waits
                request.send(_BUSY)
            except OSError:
                pass  # it is being refused either way
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.conns_lock:
                self.conns.pop(id(request), None)

    def finish_request(self, request: Any, client_address: Any) -> None:
        conn = self.conns[id(request)]
        request.settimeout(self.request_timeout_s)  # each recv and send; the deadline bounds their sum
        web = self.web.current() if self.web is not None else None
        if self.web is not None and web is None:
            self.refuse("config", client_address)
            return
        if web is not None and web.context is not None:
            with self.conns_lock:  # drop_slow must see the socket that holds the descriptor now
                tls = web.context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
                conn.sock = tls
            try:
                tls.do_handshake()  # under the read deadline too
            except (OSError, ssl.SSLError) as e:
                tls.close()
                self.refuse("timeout" if conn.deadline < time.monotonic() else "tls", client_address)
                log.debug("TLS handshake with %s failed: %s", client_address, e)
                return
            try:
                _Handler(tls, client_address, self, conn, web)
            finally:
                tls.close()
            return
        _Handler(request, client_address, self, conn, web)

    def drop_slow(self) -> None:
        """Cut the connections still sending their request past the deadline (a slowloris client)."""
        now = time.monotonic()
        with self.conns_lock:
            late = [c for c in self.conns.values() if not c.read and c.deadline < now]
            for c in late:
                c.read = True  # counted once
                try:
                    # The plain socket's shutdown, also for a TLS one: its reader wakes with EOF at once.
                    socket.socket.shutdown(c.sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed
        for c in late:
            self.refused.labels("timeout").inc()
        if late:
            log.info("HTTP: dropped %d connection(s) that took over %.0f s to send a request",
                     len(late), self.request_timeout_s)

    def handle_error(self, request: object, client_address: object) -> None:
        # A scraper that hangs up or stalls is routine; anything else is a bug worth a traceback.
        # (The stdlib default prints to stderr, bypassing logging.)
        level = logging.DEBUG if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)) else logging.WARNING
        log.log(level, "HTTP request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def __init__(self, request: Any, client_address: Any, server: _Server, conn: _Conn,
                 web: WebConfig | None) -> None:
        self.conn, self.web = conn, web
        # StreamRequestHandler sets this socket timeout on each connection (each recv and send).
        self.timeout = server.request_timeout_s
        super().__init__(request, client_address, server)

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        self.conn.read = True
        path = self.path.split("?", 1)[0]
        extra: list[tuple[str, str]] = []
        try:
            if self.web is not None and self.web.users and not self.server.auth.check(
                    self.web.users, self.headers.get("Authorization")):
                # Every path, the probes too, as in the toolkit: nothing on the port answers a stranger.
                self.server.refuse("unauthorized", self.client_address)
                status, ctype, body = 401, _TEXT, b"unauthorized\n"
                extra.append(("WWW-Authenticate", 'Basic realm="edge-infer", charset="UTF-8"'))
            elif path == "/metrics":
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
        for name, value in extra + list(self.web.headers if self.web is not None else ()):
            self.send_header(name, value)
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
    """The metrics and probe endpoint as a stage: ``start()``, ``stop()``, ``join(timeout)``, ``healthy()``.

    ``refused``: a Counter labelled by reason (``REFUSED_REASONS``). ``web_config``: the file is read at
    start (a bad one raises ``InvalidConfig`` naming ``metrics.web_config``) and again whenever it changes.
    """

    def __init__(self, *, host: str, port: int, registry: CollectorRegistry, is_alive: Callable[[], bool],
                 is_ready: Callable[[], bool], refused: Any, web_config: Path | None, max_connections: int,
                 request_timeout_s: float) -> None:
        self.host = host
        self._requested_port = port
        self.registry, self.is_alive, self.is_ready, self.refused = registry, is_alive, is_ready, refused
        self.web_config, self.web = web_config, None
        self.max_connections, self.request_timeout_s = max_connections, request_timeout_s
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
        """Bind and serve. A bind failure is a ``ConfigError`` naming ``metrics.port`` (or
        ``metrics.host``) and host:port: a restart cannot cure it, a changed setting (or the other
        program stopped) can."""
        self.web = LiveWebConfig(load_web_config(self.web_config)) if self.web_config is not None else None
        try:
            self._server = _Server((self.host, self._requested_port), self)
        except OSError as e:
            message = f"cannot listen on {self.host}:{self._requested_port}: {e.strerror or e}"
            if e.errno == errno.EADDRINUSE:
                message += (" (another program holds it: another edge-infer on this config? "
                            "choose a free port)")
            # A name that does not resolve, or an address that is not this machine's:
            host = isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL
            raise ConfigError("metrics.host" if host else "metrics.port", message) from e
        # Not a daemon thread: shutdown is explicit via stop()/join(), and the conftest guard checks it.
        self._thread = threading.Thread(target=self._run, name="http", daemon=False)
        self._thread.start()
        web = self.web.current() if self.web is not None else None
        log.info("serving /metrics, /healthz, /readyz on %s://%s:%d%s", "https" if web and web.tls else "http",
                 self.host, self.port, " with basic auth" if web and web.users else "")

    def _run(self) -> None:
        server = self._server
        assert server is not None
        try:
            # handle_request() waits at most server.timeout, so the stop flag is seen within POLL_SECONDS;
            # serve_forever()/shutdown() would instead make stop() an unbounded wait.
            while not self._stop.is_set():
                server.handle_request()
                server.drop_slow()
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
