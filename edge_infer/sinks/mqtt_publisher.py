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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import MqttConfig
from ..lifecycle import Stage, backoff_s
from ..ops.metrics import Metrics
from .homeassistant import RetainedTopics
from .mqtt_client_id import MACHINE_ID_FILES, default_client_id
from .mqtt_records import STATUS_OFFLINE, STATUS_ONLINE, decode
from .spool import Spool

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)
LOOP_S = 0.1  # paho's select timeout: how soon a new spooled result is noticed when the link is idle
CLOSE_S = 2.0  # at shutdown: waiting for the broker to take the offline status
RECONNECT_MIN_S = 0.5  # the first reconnect waits this; then doubling, jittered, up to reconnect_max_s


class MqttPublisher(Stage):
    """spool -> broker, in order; a message leaves the spool only when the broker acknowledges it."""

    kind = "publisher"  # restartable: each connection resends from the spool's first unacknowledged record

    def __init__(self, *, cfg: MqttConfig, device: str, spool: Spool, metrics: Metrics,
                 password: str | None = None, machine_id_files: tuple[Path, ...] = MACHINE_ID_FILES,
                 discovery: dict[str, bytes] | None = None, state_topics: tuple[str, ...] = ()) -> None:
        """``discovery``: retained messages published at each connection (Home Assistant's discovery
        configs); ``state_topics``: the retained topics the spool's records keep current. Together they are
        what this device owns; anything it published before and no longer owns is cleared."""
        super().__init__("mqtt")
        self._cfg, self._spool, self._metrics, self._password = cfg, spool, metrics, password
        self.client_id = cfg.client_id or default_client_id(device, spool.folder, machine_id_files)
        self._status_topic = cfg.status_topic.format(device=device)
        self._client: mqtt.Client | None = None
        self._connack: Any = None
        self._inflight: dict[int, int] = {}  # paho message id -> spool seq
        self._early: set[int] = set()  # QoS 0 counts as acknowledged once sent, which may be inside publish()
        self._status_mid = -1  # the online/offline status message: not a spooled result
        self._discovery = discovery or {}
        self._owned = set(self._discovery) | set(state_topics)
        self._retained = RetainedTopics(spool.folder)
        self._side_mids: set[int] = set()  # discovery and clearing messages: not spooled results either
        self._cleared: set[str] = set()  # retained topics no longer owned: their spooled records are skipped
        self._announcing: list[Any] = []  # their publications; retained.json is rewritten once all are done
        self._reannounce = False  # Home Assistant came online: announce again from the publishing thread
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
        client.on_message = self._on_message
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
        self._announce(client)
        if self._discovery:  # Home Assistant says "online" as it (re)starts: announce again then, as it asks
            client.subscribe(f"{self._cfg.discovery_prefix}/status", qos=1)
        self._client, self._inflight, self._early = client, {}, set()
        self._next = self._spool.ack  # resend everything not acknowledged, in order
        self.connected, self._down_reported = True, False
        self._metrics.mqtt_connected.set(1)
        log.info("MQTT connected to %s:%d as %s; %d result(s) waiting in the spool", c.host, c.port,
                 self.client_id, self._spool.pending)
        return True

    def _announce(self, client: mqtt.Client) -> None:
        """Discovery configs, and an empty retained message (MQTT's delete) on each topic published before
        and no longer owned: a region removed from the config, or discovery turned off."""
        published = self._retained.load()
        self._cleared = published - self._owned
        infos = [client.publish(t, b"", qos=1, retain=True) for t in sorted(self._cleared)]
        infos += [client.publish(t, p, qos=1, retain=True) for t, p in self._discovery.items()]
        self._side_mids = {i.mid for i in infos}
        self._announcing = infos if published != self._owned else []
        if self._cleared:
            log.info("MQTT: clearing %d retained topic(s) of regions no longer configured", len(self._cleared))

    def _announced(self) -> None:
        if not self._announcing or not all(i.is_published() for i in self._announcing):
            return
        self._announcing = []
        try:
            self._retained.save(self._owned)
        except OSError as e:  # cleared again at the next connection
            log.warning("cannot write %s: %s", self._retained.path, e.strerror or e)

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

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == f"{self._cfg.discovery_prefix}/status" and message.payload == b"online":
            self._reannounce = True

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connack = reason_code

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected = False

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        if mid == self._status_mid or mid in self._side_mids:
            self._side_mids.discard(mid)
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
        if self._reannounce:
            self._reannounce = False
            self._announce(client)
        self._announced()
        if rc != mqtt.MQTT_ERR_SUCCESS or not self.connected:
            self._lost(mqtt.error_string(rc))
            return
        free = self._cfg.max_inflight - len(self._inflight)
        for seq, record in self._spool.read(self._next, free) if free > 0 else ():
            topic, payload, retain = decode(record)
            if retain and topic in self._cleared:  # spooled before its region left the config
                self._next = seq + 1
                self._acknowledged(seq)
                continue
            info = client.publish(topic, payload, qos=self._cfg.qos, retain=retain)
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
