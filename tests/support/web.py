"""The metrics/health HTTP server on loopback, as the daemon builds it."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from edge_infer.ops.metrics import HTTP_REFUSED_REASONS
from edge_infer.ops.web import HttpServer

TIMEOUT = 5.0


def make_server(registry: CollectorRegistry | None = None, *, host: str = "127.0.0.1",
                port: int = 0, is_alive=lambda: True, is_ready=lambda: True, web_config=None,
                max_connections: int = 8, request_timeout_s: float = 10.0) -> HttpServer:
    """An HttpServer on loopback with its refusal counter (edge_infer_http_refused_total) on ``registry``."""
    registry = registry or CollectorRegistry()
    refused = Counter("edge_infer_http_refused", "test", ["reason"], registry=registry)
    for reason in HTTP_REFUSED_REASONS:
        refused.labels(reason)
    return HttpServer(host=host, port=port, registry=registry, is_alive=is_alive, is_ready=is_ready,
                      refused=refused, web_config=web_config, max_connections=max_connections,
                      request_timeout_s=request_timeout_s)
