"""The fleet sink: results go to an MQTT broker through an on-disk spool (store and forward).

Two halves. ``MqttSink`` is called by the writer inside its commit: it appends the result to the spool
(fsynced) before the input is acknowledged, so a result is never lost between the two. ``MqttPublisher``
is a thread that drains the spool in order with at most ``max_inflight`` messages unacknowledged, and
removes a message only on the broker's PUBACK. After a lost connection it reconnects with a fresh client
and resends from the oldest unacknowledged message: QoS 1 may deliver twice (the payload's
``input_sha256`` tells), never zero times and never out of order.
"""
from __future__ import annotations

import logging
import re
import socket
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import MqttConfig
from ..errors import ConfigError
from ..lifecycle import Stage, backoff_s
from ..ops.metrics import Metrics
from .durable import encode_json
from .mqtt_client_id import MACHINE_ID_FILES, default_client_id
from .spool import Spool, SpoolFull

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)
_TOPIC_LEN = struct.Struct("<H")
STATUS_ONLINE, STATUS_OFFLINE = b"online", b"offline"
LOOP_S = 0.1  # paho's select timeout: how soon a new spooled result is noticed when the link is idle
CLOSE_S = 2.0  # at shutdown: waiting for the broker to take the offline status
RECONNECT_MIN_S = 0.5  # the first reconnect waits this; then doubling, jittered, up to reconnect_max_s


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


def encode(topic: str, obj: dict[str, Any]) -> bytes:
    """A spool record: the topic, then the payload, encoded as the result file is (a name that is not UTF-8
    included). The topic is ours (device and source names), always UTF-8."""
    t = topic.encode("utf-8")
    return _TOPIC_LEN.pack(len(t)) + t + encode_json(obj, end="")


def decode(record: bytes) -> tuple[str, bytes]:
    (n,) = _TOPIC_LEN.unpack_from(record)
    return record[2:2 + n].decode("utf-8"), record[2 + n:]


class MqttSink:
    """The writer's side: one result -> one spool record on its source's topic."""

    def __init__(self, *, cfg: MqttConfig, device: str, spool: Spool, metrics: Metrics) -> None:
        self._cfg, self._device, self._spool, self._metrics = cfg, device, spool, metrics
        self._refusing = False  # camera frames are being refused by a full spool (logged once per episode)
        metrics.mqtt_spool_corrupt_total.inc(spool.corrupt)  # found as the spool was opened

    def add(self, obj: dict[str, Any]) -> None:
        """A folder input's result, durably. Raises ``SpoolFull`` (hold the input) or ``OSError``."""
        try:
            self._append(obj, durable=True)
        except SpoolFull:
            self._metrics.mqtt_spool_full.set(1)
            raise
        self._metrics.mqtt_spool_full.set(0)

    def add_frame(self, obj: dict[str, Any]) -> None:
        """A camera frame's result: not fsynced (like its JSON Lines), and dropped, counted, when the spool is full.

        A camera cannot be held back the way a folder can, so blocking would only stall the folders too.
        """
        try:
            self._append(obj, durable=False)
        except SpoolFull as e:
            self._metrics.mqtt_dropped_total.inc()
            if not self._refusing:
                log.error("camera results not sent over MQTT: %s", e.strerror)
            self._refusing = True
            return
        self._refusing = False

    def _append(self, obj: dict[str, Any], durable: bool) -> None:
        topic = self._cfg.topic.format(device=self._device, source=obj["source"])
        record = encode(topic, {**obj, "device": self._device})  # a fleet's collector sees whose it is
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


class MqttPublisher(Stage):
    """spool -> broker, in order; a message leaves the spool only when the broker acknowledges it."""

    kind = "publisher"  # restartable: each connection resends from the spool's first unacknowledged record

    def __init__(self, *, cfg: MqttConfig, device: str, spool: Spool, metrics: Metrics,
                 password: str | None = None, machine_id_files: tuple[Path, ...] = MACHINE_ID_FILES) -> None:
        super().__init__("mqtt")
        self._cfg, self._spool, self._metrics, self._password = cfg, spool, metrics, password
        self.client_id = cfg.client_id or default_client_id(device, spool.folder, machine_id_files)
        self._status_topic = cfg.status_topic.format(device=device)
        self._client: mqtt.Client | None = None
        self._connack: Any = None
        self._inflight: dict[int, int] = {}  # paho message id -> spool seq
        self._early: set[int] = set()  # QoS 0 counts as acknowledged once sent, which may be inside publish()
        self._status_mid = -1  # the online/offline status message: not a spooled result
        self._next = 0  # the next spool seq to send
        self._drain_until = 0.0
        self._down_reported = False
        self.connected = False

    def drain(self, until: float) -> None:
        """Stop, after sending what is spooled while the broker is reachable, until monotonic time ``until``."""
        self._drain_until = until
        self.stop()

    def _keep_going(self) -> bool:
        if self.should_keep_running():
            return True
        # Stopping: while connected, finish what is spooled within the drain deadline; the rest waits on disk.
        return (self._client is not None and self._spool.pending > 0
                and time.monotonic() < self._drain_until)

    def run(self) -> None:
        failures = 0
        try:
            while self._keep_going():
                if self._client is None:
                    if self._connect():
                        failures = 0
                    elif self.wait(backoff_s(failures, RECONNECT_MIN_S, self._cfg.reconnect_max_s)):
                        break
                    else:
                        failures += 1
                    continue
                self._pump()
        finally:
            self._close()

    # -- connection -----------------------------------------------------------------------------------------
    def _new_client(self) -> mqtt.Client:
        import paho.mqtt.client as mqtt  # the `mqtt` extra; checked at start-up (ops.preflight)

        c = self._cfg
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        client.connect_timeout = c.connect_timeout_s
        client.max_inflight_messages_set(c.max_inflight)
        client.will_set(self._status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if c.username is not None:
            client.username_pw_set(c.username, self._password)
        if c.tls:
            client.tls_set(ca_certs=str(c.ca_file) if c.ca_file else None,
                           certfile=str(c.cert_file) if c.cert_file else None,
                           keyfile=str(c.key_file) if c.key_file else None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _connect(self) -> bool:
        # A fresh client per connection: nothing paho queued for the old one is sent twice or out of order.
        import paho.mqtt.client as mqtt

        c = self._cfg
        self._connack = None
        try:
            client = self._new_client()
            client.connect(c.host, c.port, c.keepalive_s)
        except (OSError, ValueError) as e:  # refused, unreachable, TLS handshake (ssl.SSLError is an OSError)
            self._report_down("MQTT broker %s:%d unreachable: %s", c.host, c.port, e)
            return False
        deadline = time.monotonic() + c.connect_timeout_s
        while self._connack is None and time.monotonic() < deadline:
            if client.loop(LOOP_S) != mqtt.MQTT_ERR_SUCCESS:
                break
        if self._connack is None or self._connack.is_failure:
            self._report_down("MQTT broker %s:%d refused the connection: %s", c.host, c.port,
                              self._connack or "no CONNACK in time")
            client.disconnect()
            return False
        self._status_mid = client.publish(self._status_topic, STATUS_ONLINE, qos=1, retain=True).mid
        self._client, self._inflight, self._early = client, {}, set()
        self._next = self._spool.ack  # resend everything not acknowledged, in order
        self.connected, self._down_reported = True, False
        self._metrics.mqtt_connected.set(1)
        log.info("MQTT connected to %s:%d as %s; %d result(s) waiting in the spool", c.host, c.port,
                 self.client_id, self._spool.pending)
        return True

    def _report_down(self, message: str, *args: Any) -> None:
        # Once per outage at warning level: a device offline for a day must not fill its journal.
        (log.debug if self._down_reported else log.warning)(message + "%s", *args,
                                                            "" if self._down_reported else "; retrying quietly")
        self._down_reported = True

    def _lost(self, why: str) -> None:
        log.warning("MQTT connection lost (%s); %d result(s) kept in the spool", why, self._spool.pending)
        if self._client is not None:
            self._client.disconnect()
        self._client, self.connected = None, False
        self._metrics.mqtt_connected.set(0)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connack = reason_code

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected = False

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if mid == self._status_mid:
            return
        seq = self._inflight.pop(mid, None)
        if seq is None:
            if self._cfg.qos == 0:
                self._early.add(mid)
            return
        self._acknowledged(seq)

    def _acknowledged(self, seq: int) -> None:
        self._spool.acknowledge(seq)
        self._metrics.mqtt_acked_total.inc()

    # -- publishing -----------------------------------------------------------------------------------------
    def _pump(self) -> None:
        import paho.mqtt.client as mqtt

        client = self._client
        assert client is not None
        rc = client.loop(LOOP_S)  # reads PUBACKs (-> _on_publish), keeps the connection alive
        self._spool.flush_ack()
        if rc != mqtt.MQTT_ERR_SUCCESS or not self.connected:
            self._lost(mqtt.error_string(rc))
            return
        free = self._cfg.max_inflight - len(self._inflight)
        for seq, record in self._spool.read(self._next, free) if free > 0 else ():
            topic, payload = decode(record)
            info = client.publish(topic, payload, qos=self._cfg.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._lost(mqtt.error_string(info.rc))
                return
            self._metrics.mqtt_published_total.inc()
            self._next = seq + 1
            if info.mid in self._early:
                self._early.discard(info.mid)
                self._acknowledged(seq)
            else:
                self._inflight[info.mid] = seq
        self._metrics.mqtt_spool_bytes.set(self._spool.disk_bytes)

    def _close(self) -> None:
        """Tell the broker we are going (retained offline), then disconnect; bounded by CLOSE_S."""
        client = self._client
        if client is None:
            return
        import paho.mqtt.client as mqtt

        info = client.publish(self._status_topic, STATUS_OFFLINE, qos=1, retain=True)
        self._status_mid = info.mid
        deadline = time.monotonic() + CLOSE_S
        while not info.is_published() and time.monotonic() < deadline:
            if client.loop(LOOP_S) != mqtt.MQTT_ERR_SUCCESS:
                break
        client.disconnect()
        self._client, self.connected = None, False
        self._metrics.mqtt_connected.set(0)
        left = self._spool.pending
        log.info("MQTT disconnected%s", f"; {left} result(s) stay in the spool for the next start" if left else "")
