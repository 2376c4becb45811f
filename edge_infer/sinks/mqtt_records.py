"""The writer's half of the fleet sink: each result, region state and region event as one spool record.

A record is its topic, a retain flag and the payload. Folder results are appended durably (fsynced before
the input is acknowledged); camera frames, region states and events are not (like their JSON Lines), and
are dropped, counted, when the spool is full: a camera cannot be held back the way a folder can.
"""
from __future__ import annotations

import logging
import re
import socket
import struct
from typing import Any

from ..config import MqttConfig
from ..errors import ConfigError
from ..ops.metrics import Metrics
from .durable import encode_json
from .spool import Spool, SpoolFull

log = logging.getLogger(__name__)
_TOPIC_LEN = struct.Struct("<H")
STATUS_ONLINE, STATUS_OFFLINE = b"online", b"offline"  # the retained status topic's payloads (and last will)
RETAIN_BIT = 0x8000  # in the topic's length (topics are far shorter): a record written before it has it clear


def device_name(cfg: MqttConfig) -> str:
    """The configured device, or the host name made safe as one topic level."""
    return cfg.device or re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "unnamed"


def read_password(cfg: MqttConfig) -> str | None:
    if cfg.password_file is None:
        return None
    try:
        return cfg.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("output.mqtt.password_file", f"cannot read {cfg.password_file}: "
                                                       f"{getattr(e, 'strerror', None) or e}") from e


def encode(topic: str, obj: dict[str, Any], retain: bool = False) -> bytes:
    """A spool record of a JSON payload, encoded as the result file is (a name that is not UTF-8 included)."""
    return encode_raw(topic, encode_json(obj, end=""), retain)


def encode_raw(topic: str, payload: bytes, retain: bool = False) -> bytes:
    """A spool record: the topic's length (with the retain flag), the topic, then the payload. The topic is
    ours (device, source and region names), always UTF-8."""
    t = topic.encode("utf-8")
    return _TOPIC_LEN.pack(len(t) | (RETAIN_BIT if retain else 0)) + t + payload


def decode(record: bytes) -> tuple[str, bytes, bool]:
    """(topic, payload, retain) of a spool record."""
    (n,) = _TOPIC_LEN.unpack_from(record)
    retain, n = bool(n & RETAIN_BIT), n & ~RETAIN_BIT
    return record[2:2 + n].decode("utf-8"), record[2 + n:], retain


class MqttSink:
    """The writer's side: one result -> one spool record on its source's topic."""

    def __init__(self, *, cfg: MqttConfig, device: str, spool: Spool, metrics: Metrics) -> None:
        self._cfg, self._device, self._spool, self._metrics = cfg, device, spool, metrics
        self._refusing = False  # camera frames are being refused by a full spool (logged once per episode)
        metrics.mqtt_spool_corrupt_total.inc(spool.corrupt)  # found as the spool was opened

    def add(self, obj: dict[str, Any]) -> None:
        """A folder input's result, durably. Raises ``SpoolFull`` (hold the input) or ``OSError``."""
        topic = self._cfg.topic.format(device=self._device, source=obj["source"])
        try:
            # The device in the payload: a fleet's collector sees whose it is.
            self._append(encode(topic, {**obj, "device": self._device}), topic, durable=True)
        except SpoolFull:
            self._metrics.mqtt_spool_full.set(1)
            raise
        self._metrics.mqtt_spool_full.set(0)

    def add_frame(self, obj: dict[str, Any]) -> None:
        """A camera frame's result on its source's topic (not durable; see the module docstring)."""
        topic = self._cfg.topic.format(device=self._device, source=obj["source"])
        self._add_camera(encode(topic, {**obj, "device": self._device}), topic)

    def add_state(self, source: str, region: str, state: str) -> None:
        """A camera region's state, retained: a subscriber arriving later is told the current one at once."""
        topic = self._cfg.state_topic.format(device=self._device, source=source, region=region)
        self._add_camera(encode_raw(topic, state.encode("utf-8"), retain=True), topic)

    def add_event(self, event: dict[str, Any]) -> None:
        """A camera region's confirmed change (README, Camera regions), not retained."""
        topic = self._cfg.events_topic.format(device=self._device, source=event["source"], region=event["region"])
        self._add_camera(encode(topic, {**event, "device": self._device}), topic)

    def _add_camera(self, record: bytes, topic: str) -> None:
        try:
            self._append(record, topic, durable=False)
        except OSError as e:
            # SpoolFull, or the spool's disk refusing: dropped, as a busy daemon drops frames
            self._metrics.mqtt_dropped_total.inc()
            if not self._refusing:
                log.error("camera results not sent over MQTT: %s", e.strerror or e)
            self._refusing = True
            return
        self._refusing = False

    def _append(self, record: bytes, topic: str, durable: bool) -> None:
        if not self._spool.fits(len(record)):  # could never be spooled: holding the input would block for good
            self._metrics.mqtt_dropped_total.inc()
            log.error("a %d-byte result for %s does not fit output.mqtt.spool_max_bytes; not sent over MQTT",
                      len(record), topic)
            return
        dropped = self._spool.append(record, durable=durable)
        if dropped:
            self._metrics.mqtt_dropped_total.inc(dropped)
            log.error("MQTT spool full: dropped the %d oldest unsent result(s) (on_full: drop_oldest)", dropped)
        self._metrics.mqtt_spooled_total.inc()
        self._metrics.mqtt_spool_bytes.set(self._spool.disk_bytes)
