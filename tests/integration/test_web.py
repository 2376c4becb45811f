import socket
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter

from edge_infer.errors import ConfigError
from edge_infer.ops.web import HttpServer
from tests.support.web import TIMEOUT, make_server

class Flags:
    def __init__(self) -> None:
        self.alive = True
        self.ready = False


@pytest.fixture
def served():
    registry = CollectorRegistry()
    counter = Counter("edge_infer_test_hits", "test", registry=registry)
    flags = Flags()
    server = make_server(registry, is_alive=lambda: flags.alive, is_ready=lambda: flags.ready)
    server.start()
    yield server, counter, flags
    server.stop()
    assert server.join(TIMEOUT)


def fetch(server: HttpServer, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers.get("Content-Type", ""), e.read()


def test_metrics_are_prometheus_text_with_current_values(served):
    server, counter, _ = served
    counter.inc(3)
    status, ctype, body = fetch(server, "/metrics")
    assert status == 200
    assert ctype == CONTENT_TYPE_LATEST
    assert "edge_infer_test_hits_total 3.0" in body.decode().splitlines()


def test_healthz_follows_is_alive(served):
    server, _, flags = served
    assert fetch(server, "/healthz")[::2] == (200, b"ok\n")
    flags.alive = False
    assert fetch(server, "/healthz")[0] == 503


def test_readyz_follows_is_ready(served):
    server, _, flags = served
    assert fetch(server, "/readyz")[::2] == (503, b"not ready\n")
    flags.ready = True
    assert fetch(server, "/readyz")[::2] == (200, b"ready\n")
    flags.ready = False
    assert fetch(server, "/readyz")[0] == 503


def test_unknown_path_is_404_and_head_has_no_body(served):
    server, _, _ = served
    assert fetch(server, "/nope")[0] == 404
    status, ctype, body = fetch(server, "/metrics", method="HEAD")
    assert (status, ctype, body) == (200, CONTENT_TYPE_LATEST, b"")


def test_a_failing_probe_answers_500(served):
    server, _, _ = served
    server._server.is_ready = lambda: 1 / 0  # the probe callable itself raises
    assert fetch(server, "/readyz")[0] == 500
    assert fetch(server, "/healthz")[0] == 200


def test_serves_on_a_non_daemon_thread_named_http(served):
    server, _, _ = served
    threads = [t for t in threading.enumerate() if t.name == "http"]
    assert len(threads) == 1 and not threads[0].daemon
    assert server.healthy()
    assert server.port > 0


def test_stop_and_join_closes_the_port():
    server = make_server()
    server.start()
    port = server.port
    assert fetch(server, "/healthz")[0] == 200
    server.stop()
    assert server.join(TIMEOUT)
    assert not server.healthy()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()


def test_port_in_use_raises_a_config_error_from_start_naming_the_key_and_the_address():
    first = make_server()
    first.start()
    try:
        second = make_server(port=first.port)
        address = f"127.0.0.1:{first.port}"
        with pytest.raises(ConfigError, match=f"metrics.port: cannot listen on {address}: .*use"):
            second.start()
        assert second.join(TIMEOUT)  # nothing was started, nothing to wait for
    finally:
        first.stop()
        assert first.join(TIMEOUT)


def test_a_host_that_is_not_an_address_of_this_machine_names_metrics_host():
    server = make_server(host="192.0.2.1")  # TEST-NET-1: never this machine's
    with pytest.raises(ConfigError, match="metrics.host: cannot listen on 192.0.2.1:0"):
        server.start()


def test_a_silent_client_does_not_block_other_requests(served):
    server, _, _ = served
    # A connection that never sends its request holds one handler thread; others must still be served.
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT):
        assert fetch(server, "/healthz")[0] == 200
