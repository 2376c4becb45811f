"""The HTTP port on a real network: TLS and basic auth from a web config, a bound on connections and on the
time to send one request. Real servers on free ports, real sockets, a real CA and certificate (openssl)."""
from __future__ import annotations

import base64
import select
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry

from edge_infer.ops.web import HttpServer
from tests.support.daemon import wait_for
from tests.support.tls import Pki, bcrypt_hash
from tests.support.web import TIMEOUT, make_server



def web_config(folder: Path, pki: Pki | None, users: dict[str, str] | None = None, **extra) -> Path:
    doc: dict = dict(extra)
    if pki is not None:
        doc["tls_server_config"] = {"cert_file": str(pki.cert), "key_file": str(pki.key)}
    if users is not None:
        doc["basic_auth_users"] = {u: bcrypt_hash(p) for u, p in users.items()}
    path = folder / "web.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def get(url: str, *, ca: Path | None = None, auth: tuple[str, str] | None = None):
    """(status, headers, body) of a GET; the TLS client trusts only ``ca``."""
    req = urllib.request.Request(url)
    if auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    ctx = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT, context=ctx) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def refused(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("edge_infer_http_refused_total", {"reason": reason})


@pytest.fixture
def serve():
    started = []

    def start(**kw) -> tuple[HttpServer, CollectorRegistry]:
        registry = CollectorRegistry()
        server = make_server(registry, **kw)
        server.start()
        started.append(server)
        return server, registry

    yield start
    for server in started:
        server.stop()
        assert server.join(TIMEOUT)


def test_https_with_basic_auth_answers_200_to_the_right_password_and_401_to_wrong_or_none(tmp_path, pki, serve):
    server, registry = serve(web_config=web_config(tmp_path, pki, {"prometheus": "s3cret"}))
    base = f"https://127.0.0.1:{server.port}"
    status, _, body = get(base + "/metrics", ca=pki.ca, auth=("prometheus", "s3cret"))
    assert status == 200 and b"edge_infer_http_refused_total" in body
    for path in ("/metrics", "/healthz", "/readyz"):  # the probes too: nothing answers a stranger
        for auth in (None, ("prometheus", "wrong"), ("someone", "s3cret"), ("prometheus", "")):
            status, headers, _ = get(base + path, ca=pki.ca, auth=auth)
            assert status == 401, (path, auth)
            assert headers["WWW-Authenticate"].startswith("Basic realm="), (path, auth)
    assert refused(registry, "unauthorized") == 12
    assert get(base + "/healthz", ca=pki.ca, auth=("prometheus", "s3cret"))[0] == 200


def test_tls_refuses_plain_http_and_a_client_that_trusts_another_ca(tmp_path, pki, serve):
    server, registry = serve(web_config=web_config(tmp_path, pki))
    assert get(f"https://127.0.0.1:{server.port}/healthz", ca=pki.ca)[0] == 200  # no users: no auth
    with pytest.raises(urllib.error.URLError) as e:
        get(f"https://127.0.0.1:{server.port}/healthz", ca=pki.other_ca)
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)
    # Plain HTTP to the TLS port gets no answer (the bytes are not a ClientHello).
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        get(f"http://127.0.0.1:{server.port}/healthz")
    wait_for(lambda: refused(registry, "tls") == 2, TIMEOUT, "both handshakes counted as failed")


def test_a_verified_password_is_not_checked_with_bcrypt_again(tmp_path, serve, monkeypatch):
    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: calls.append(pw) or real(pw, h))
    server, _ = serve(web_config=web_config(tmp_path, None, {"prometheus": "s3cret"}))
    base = f"http://127.0.0.1:{server.port}"
    for _ in range(5):
        assert get(base + "/metrics", auth=("prometheus", "s3cret"))[0] == 200
    assert calls == [b"s3cret"]
    for _ in range(3):
        assert get(base + "/metrics", auth=("prometheus", "guess"))[0] == 401
    assert calls == [b"s3cret", b"guess"]
    assert get(base + "/metrics", auth=("nobody", "s3cret"))[0] == 401  # checked against a dummy hash
    assert len(calls) == 3


def test_connections_over_max_connections_are_refused_with_503_and_counted(serve):
    server, registry = serve(max_connections=2)
    holders = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) for _ in range(2)]
    try:
        wait_for(lambda: len(server._server.conns) == 2, TIMEOUT, "both silent connections admitted")
        status, headers, body = get(f"http://127.0.0.1:{server.port}/healthz")
        assert (status, body, headers["Retry-After"]) == (503, b"busy\n", "1")
        assert refused(registry, "busy") == 1
    finally:
        for s in holders:
            s.close()
    wait_for(lambda: get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200, 30, "served again once they left")


def _dropped_while_trickling(port: int, first: bytes, limit_s: float) -> bool:
    """Send ``first``, then one header byte every 0.2 s; True once the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(first)
        end = time.monotonic() + limit_s
        while time.monotonic() < end:
            if select.select([s], [], [], 0.2)[0]:
                try:
                    return s.recv(100) == b""
                except ConnectionError:
                    return True
            try:
                s.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                return True
    return False


def test_a_client_trickling_its_request_is_dropped_after_request_timeout_s(serve):
    # Each byte comes well within the socket timeout: only a deadline on the whole request ends it.
    server, registry = serve(request_timeout_s=1.0)
    assert _dropped_while_trickling(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ", 30)
    wait_for(lambda: refused(registry, "timeout") == 1, TIMEOUT, "the slow request counted as a timeout")
    assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200


def test_a_tls_client_that_never_finishes_its_handshake_is_dropped(tmp_path, pki, serve):
    server, registry = serve(web_config=web_config(tmp_path, pki), request_timeout_s=1.0)
    # A TLS record header announcing a long ClientHello, then a byte at a time.
    assert _dropped_while_trickling(server.port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 30)
    wait_for(lambda: refused(registry, "timeout") == 1, TIMEOUT, "the slow handshake counted as a timeout")
    assert get(f"https://127.0.0.1:{server.port}/healthz", ca=pki.ca)[0] == 200


def test_the_web_config_is_re_read_when_it_changes_and_a_broken_edit_fails_closed(tmp_path, pki, serve):
    path = web_config(tmp_path, pki, {"prometheus": "old"})
    server, registry = serve(web_config=path)
    url = f"https://127.0.0.1:{server.port}/metrics"
    assert get(url, ca=pki.ca, auth=("prometheus", "old"))[0] == 200
    web_config(tmp_path, pki, {"prometheus": "new"})
    assert get(url, ca=pki.ca, auth=("prometheus", "old"))[0] == 401
    assert get(url, ca=pki.ca, auth=("prometheus", "new"))[0] == 200
    path.write_text(path.read_text() + "surprise: 1\n")  # an unknown key: the file no longer reads
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        get(url, ca=pki.ca, auth=("prometheus", "new"))
    assert refused(registry, "config") == 1
    web_config(tmp_path, pki, {"prometheus": "new"})
    assert get(url, ca=pki.ca, auth=("prometheus", "new"))[0] == 200


def test_configured_headers_are_sent_on_every_answer(tmp_path, serve):
    path = web_config(tmp_path, None, {"u": "p"}, http_server_config={
        "headers": {"X-Content-Type-Options": "nosniff", "Strict-Transport-Security": "max-age=60"}})
    server, _ = serve(web_config=path)
    for auth in (("u", "p"), None):
        _, headers, _ = get(f"http://127.0.0.1:{server.port}/healthz", auth=auth)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Strict-Transport-Security"] == "max-age=60"


def test_check_config_and_run_refuse_a_bad_web_config_with_78_naming_the_inner_key(tmp_path, pki):
    from tests.support.cli import run_cli
    from tests.support.daemon import write_config

    web = tmp_path / "web.yml"
    cfg = write_config(tmp_path, metrics={"web_config": "web.yml"})  # relative: to the config's folder
    for doc, key in (({"tls_server_config": {"cert_file": "missing.pem", "key_file": str(pki.key)}},
                      "metrics.web_config.tls_server_config.cert_file: cannot load"),
                     ({"basic_auth_users": {"prometheus": "plain text"}},
                      "metrics.web_config.basic_auth_users.prometheus: must be a bcrypt hash"),
                     ({"tls_server_config": {"cert_file": str(pki.cert), "key_file": str(pki.key)}, "tls": True},
                      "metrics.web_config.tls: unknown key")):
        web.write_text(yaml.safe_dump(doc))
        for command in ("check-config", "run"):
            r = run_cli(command, "-c", str(cfg))
            assert r.returncode == 78 and key in r.stderr and "Traceback" not in r.stderr, (command, r.stderr)
    web.unlink()
    r = run_cli("check-config", "-c", str(cfg))
    assert r.returncode == 78 and f"metrics.web_config: {web}: cannot read" in r.stderr, r.stderr
    web.write_text(yaml.safe_dump({"tls_server_config": {"cert_file": str(pki.cert), "key_file": str(pki.key)},
                                   "basic_auth_users": {"prometheus": bcrypt_hash("pw")}}))
    assert run_cli("check-config", "-c", str(cfg)).returncode == 0
