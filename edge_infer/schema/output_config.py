"""The schema of where results go: the output folder and the MQTT sink."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..config_reader import ABSENT, REQUIRED, Section, read, setting

DEVICE_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")  # one MQTT topic level: no /, + or #


@dataclass(frozen=True)
class MqttConfig:
    """The fleet sink. The password is never in the config: ``password_file`` names a file holding
    it."""
    host: str = setting(REQUIRED, "the broker")
    port: int = setting(1883, "the broker's port", ge=1, le=65535)
    topic: str = setting("edge-infer/{device}/{source}/results", "where results go",
                         placeholders=("device", "source"))
    qos: int = setting(1, "MQTT quality of service", choices=(0, 1, 2))
    device: Optional[str] = setting(None, "this device's name in topics; None: the host name")
    client_id: Optional[str] = setting(
        None, "None: edge-infer-<device>-<8 hex digits from the machine id>")
    status_topic: str = setting(
        "edge-infer/{device}/status", "retained online/offline, offline also as the last will",
        placeholders=("device",))
    username: Optional[str] = setting(None, "broker login")
    password_file: Optional[Path] = setting(None, "a file holding the password (its first line)")
    allow_insecure_login: bool = setting(
        False, "allow username + password_file without tls (sent in clear)")
    tls: bool = setting(False, "connect with TLS")
    ca_file: Optional[Path] = setting(None, "TLS: None trusts the system's CAs")
    cert_file: Optional[Path] = setting(None, "TLS client certificate (with key_file)")
    key_file: Optional[Path] = setting(None, "TLS client key (with cert_file)")
    keepalive_s: int = setting(30, "MQTT keepalive", ge=5, le=3600)
    connect_timeout_s: float = setting(10.0, "bound on one connection attempt", gt=0, le=300)
    reconnect_max_s: float = setting(
        30.0, "reconnect backoff doubles from 0.5 s up to this", ge=0.5, le=3600)
    max_inflight: int = setting(
        20, "published and not yet acknowledged by the broker", ge=1, le=1000)
    spool_dir: Optional[Path] = setting(
        None, "results not yet acknowledged; None: <output.dir>/.mqtt-spool")
    spool_max_bytes: int = setting(64 * 1024 * 1024, "the spool's bound", ge=64 * 1024)
    on_full: Literal["block", "drop_oldest"] = setting("block", "what a full spool does")
    state_topic: str = setting(
        "edge-infer/{device}/{source}/{region}/state", "camera regions: the state, retained",
        placeholders=("device", "source", "region"))
    events_topic: str = setting(
        "edge-infer/{device}/{source}/{region}/events", "camera regions: each change",
        placeholders=("device", "source", "region"))
    homeassistant: bool = setting(
        False, "announce each camera region to Home Assistant (MQTT discovery)")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery prefix",
                                    pattern=r"[A-Za-z0-9_/-]+")


@dataclass(frozen=True)
class OutputConfig:
    dir: Path = setting(REQUIRED, "results go to <dir>/<source>/<relative path>.json")
    mqtt: Optional[MqttConfig] = None  # read by _parse_output


def _parse_mqtt(s: Section) -> MqttConfig:
    if s.raw("password") is not ABSENT:
        s.error("password", "not allowed in the config: put the password in a file only the "
                            "service can read and name that file in password_file")
    cfg = read(s, MqttConfig)
    if cfg.device and not DEVICE_PATTERN.fullmatch(cfg.device):
        s.error("device", f"must match {DEVICE_PATTERN.pattern} (one topic level), "
                          f"got {cfg.device!r}")
    topics = (("topic", cfg.topic), ("status_topic", cfg.status_topic),
              ("state_topic", cfg.state_topic), ("events_topic", cfg.events_topic))
    for key, topic in topics:
        # wildcards are for subscribing; a broker rejects them in a publish
        if "+" in topic or "#" in topic:
            s.error(key, f"must not contain the MQTT wildcards + or #, got {topic!r}")
    if cfg.password_file is not None and cfg.username is None:
        s.error("password_file", "needs username")
    elif cfg.password_file is not None and not (cfg.tls or cfg.allow_insecure_login):
        s.error("password_file", "would be sent in clear without tls: true (allow_insecure_login: "
                                 "true allows it)")
    for key in ("ca_file", "cert_file", "key_file"):
        if getattr(cfg, key) is not None and not cfg.tls:
            s.error(key, "needs tls: true")
    if (cfg.cert_file is None) != (cfg.key_file is None):
        s.error("key_file" if cfg.key_file is None else "cert_file",
                "cert_file and key_file go together")
    return cfg


def parse_output(s: Section) -> OutputConfig:
    return read(s, OutputConfig, mqtt=lambda o: o.optional_section("mqtt", _parse_mqtt))
