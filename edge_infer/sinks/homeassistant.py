"""Home Assistant's MQTT discovery for camera regions, and the retained topics this device owns.

Each region is announced as a sensor on ``<discovery_prefix>/sensor/<device>_<source>_<region>/config``
(retained), as Zigbee2MQTT and ESPHome announce theirs: Home Assistant then shows it with no configuration.
The region's state topic is retained too. A retained message outlives the config that made it, so the
topics published are remembered in ``retained.json`` beside the spool; at the next connection, whatever is
remembered and no longer configured (a region removed, discovery turned off) is cleared with an empty
retained message, which is how MQTT deletes one and how Home Assistant removes a discovered entity.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import CameraSourceConfig, MqttConfig, RegionConfig
from .durable import replace_file
from .mqtt_records import STATUS_OFFLINE, STATUS_ONLINE

log = logging.getLogger(__name__)
RETAINED_FILE = "retained.json"


def _object_id(*parts: str) -> str:
    # Home Assistant's node and object ids take [a-zA-Z0-9_-] only; a device may also hold dots.
    return re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(parts))


def state_topics(cfg: MqttConfig, device: str, cameras: Iterable[CameraSourceConfig]) -> list[str]:
    return [cfg.state_topic.format(device=device, source=cam.name, region=r.name)
            for cam in cameras for r in cam.regions]


def sensor_config(cfg: MqttConfig, device: str, source: str,
                  region: RegionConfig) -> tuple[str, dict[str, Any]]:
    """(discovery topic, payload) of one region's sensor, per Home Assistant's MQTT sensor schema."""
    topics = {"device": device, "source": source, "region": region.name}
    node = _object_id(device, source, region.name)
    payload: dict[str, Any] = {
        "name": f"{source} {region.name}",
        "unique_id": _object_id("edge_infer", device, source, region.name),
        "state_topic": cfg.state_topic.format(**topics),
        "json_attributes_topic": cfg.events_topic.format(**topics),  # score, previous, frame, at of the last change
        "availability_topic": cfg.status_topic.format(device=device),
        "payload_available": STATUS_ONLINE.decode(),
        "payload_not_available": STATUS_OFFLINE.decode(),
        "icon": "mdi:cctv",
        "device": {"identifiers": [_object_id("edge_infer", device)], "name": device,
                   "manufacturer": "edge-infer", "model": "edge-infer", "sw_version": __version__},
        "origin": {"name": "edge-infer", "sw_version": __version__},
    }
    if region.states:  # a fixed set: Home Assistant shows it as an enum, and its history as a timeline
        payload["device_class"] = "enum"
        payload["options"] = [*region.states, "unknown"]
    return f"{cfg.discovery_prefix}/sensor/{node}/config", payload


def discovery_messages(cfg: MqttConfig, device: str,
                       cameras: Iterable[CameraSourceConfig]) -> dict[str, bytes]:
    """Every region's discovery config (empty without ``homeassistant: true``)."""
    if not cfg.homeassistant:
        return {}
    out: dict[str, bytes] = {}
    for cam in cameras:
        for region in cam.regions:
            topic, payload = sensor_config(cfg, device, cam.name, region)
            out[topic] = json.dumps(payload, sort_keys=True).encode("utf-8")
    return out


class RetainedTopics:
    """The retained topics published by this device, kept in ``<folder>/retained.json``."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / RETAINED_FILE

    def load(self) -> set[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as e:
            log.warning("cannot read %s (%s): retained topics of removed regions are not cleared this time",
                        self.path, e)
            return set()
        topics = data.get("topics") if isinstance(data, dict) else None
        return {t for t in topics if isinstance(t, str)} if isinstance(topics, list) else set()

    def save(self, topics: Iterable[str]) -> None:
        replace_file(self.path, (json.dumps({"topics": sorted(topics)}, indent=1) + "\n").encode("utf-8"))
