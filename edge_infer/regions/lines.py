"""A camera's JSON Lines, as the regions stage writes them: a line the disk refuses (full,
read-only) is dropped, as a busy daemon drops frames, so that the region states, their metrics and
their MQTT messages go on whatever the disk does. The refusal is logged once, and so is its end."""
from __future__ import annotations

import logging
from typing import Any

from ..sinks.jsonl import JsonlSink

log = logging.getLogger(__name__)


class CameraLines:
    def __init__(self, sink: JsonlSink, camera: str) -> None:
        self._sink, self._camera = sink, camera
        self._refused = False

    def append(self, obj: dict[str, Any]) -> None:
        try:
            self._sink.append(obj)
        except OSError as e:
            if not self._refused:
                log.error("camera %s: cannot write its results under %s: %s; its lines are "
                          "dropped until the disk takes them again", self._camera,
                          self._sink.folder, e.strerror or e)
            self._refused = True
            self._sink.close()  # reopened (a new file) at the next line
            return
        if self._refused:
            log.warning("camera %s: its results are written again", self._camera)
            self._refused = False

    def close(self) -> None:
        self._sink.close()
