"""A folder input's record handed to the MQTT spool, before the input is acknowledged: a result
acknowledged is a result kept."""
from __future__ import annotations

from pathlib import Path

from ..pipeline.jobs import FolderInput
from ..sinks.durable import read_json
from ..sinks.mqtt_records import MqttSink


def spool(mqtt: MqttSink | None, job: FolderInput, record_path: Path) -> None:
    """Once per job (a retry after a full spool does not add it twice). A record found from an
    earlier run (a duplicate) may never have reached the spool before that run stopped, so it is
    spooled again: a repeated message at worst, which QoS 1 consumers handle anyway.
    Raises ``SpoolFull`` or ``OSError``."""
    if mqtt is None or job.spooled:
        return
    record = job.record if job.record is not None else read_json(record_path)
    if record is not None:
        mqtt.add(record)
    job.spooled = True
