"""The schema of the daemon as a service: its HTTP port, its shutdown and its log level."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..config_reader import setting


@dataclass(frozen=True)
class MetricsConfig:
    host: str = setting("127.0.0.1", "the HTTP port's address")
    port: int = setting(9464, "the HTTP port (/metrics, /healthz, /readyz); 0: any free one "
                              "(tests)", ge=0, le=65535)
    web_config: Optional[Path] = setting(
        None, "TLS and basic auth, in the exporter-toolkit's format (README)")
    max_connections: int = setting(8, "connections served at once; more are refused at once",
                                   ge=1, le=1024)
    request_timeout_s: float = setting(
        10.0, "bound on receiving one request, TLS handshake included", gt=0, le=300)
    max_label_classes: int = setting(
        100, "edge_infer_predictions_total{source,label} only for models with at most this many "
             "classes (one series per class and source)", ge=0, le=10000)


@dataclass(frozen=True)
class ShutdownConfig:
    drain_timeout_s: float = setting(20.0, "on SIGTERM, how long in-flight work may take to finish",
                                     gt=0)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = setting("info", "the lowest level logged")
