"""A camera's regions, in the regions stage (``stage.py``): each region's classified frames, in
order, through its state machine (``state_machine.py``), and what that confirms published.

Each confirmed change is one JSON Lines event in the camera's results, a retained state message and an
event message over MQTT, and the ``edge_infer_region_state`` metrics. A camera that has delivered no frame for
its ``stall_after_s`` makes every region ``unknown`` again (checked by ``tick``, which the regions
stage calls on every turn of its loop). That stage is one thread, so nothing here needs a lock.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..config import CameraSourceConfig
from ..ops.metrics import Metrics
from ..pipeline.jobs import CameraFrame
from ..pipeline.records import utc_now
from ..sinks.mqtt_records import MqttSink
from ..sinks.samples import SampleStore
from .lines import CameraLines
from .state_machine import UNKNOWN, Change, RegionState

log = logging.getLogger(__name__)


class RegionWatch:
    def __init__(self, *, camera: CameraSourceConfig, sink: CameraLines, mqtt: MqttSink | None,
                 metrics: Metrics, samples: SampleStore | None = None,
                 last_frame: Callable[[], float] | None = None) -> None:
        """``last_frame``: the monotonic time of the camera's last decoded frame (None: never goes down)."""
        self.camera = camera
        self._sink, self._mqtt, self._metrics, self._samples = sink, mqtt, metrics, samples
        self._last_frame = last_frame
        self._regions = {r.name: r for r in camera.regions}
        self.states = {r.name: RegionState(camera.name, r.name, r.threshold, r.confirm_frames, r.states)
                       for r in camera.regions}
        self._last_seq = {r.name: 0 for r in camera.regions}
        self._started = False
        self._seen: set[str] = set()  # regions with a classified frame this run (the first is a sample)

    def start(self) -> None:
        """Every region starts unknown: a retained state left by the previous run is not trusted. Once: a
        regions stage restarted in place after it died carries on with the states it had."""
        if self._started:
            return
        self._started = True
        for r in self.camera.regions:
            self._metrics.init_region(self.camera.name, r.name, r.states)
            if self._mqtt is not None:
                self._mqtt.add_state(self.camera.name, r.name, UNKNOWN)

    def observe(self, job: CameraFrame) -> None:
        """One region's classified frame."""
        region, crop, job.crop = job.region, job.crop, None  # the crop is only kept until here
        assert region is not None and job.frame is not None
        seq = job.frame["seq"]
        if seq <= self._last_seq[region]:  # two inference threads may finish frames out of order: a later one
            return                         # already counted, so this one would replay the past
        self._last_seq[region] = seq
        if job.error is not None or not job.predictions:
            return
        top = job.predictions[0]
        state = self.states[region]
        first = region not in self._seen
        self._seen.add(region)
        change = state.observe(top["label"], top["score"], dict(job.frame), utc_now())
        if self._samples is not None and crop is not None:
            why = ("first" if first else "confirm" if change else "start" if state.started
                   else "unsure" if top["score"] < self._regions[region].sample_below else None)
            if why is not None:
                self._samples.keep(region, top["label"], crop, seq, why)
        if change is not None:
            self._publish(change)

    def tick(self, now: float | None = None) -> None:
        """The camera down for ``stall_after_s``: every region unknown again."""
        if self._last_frame is None:
            return
        now = time.monotonic() if now is None else now
        if now - self._last_frame() < self.camera.stall_after_s:
            return
        for state in self.states.values():
            change = state.down(utc_now())
            if change is not None:
                log.warning("camera %s: no frame for %.0fs: region %s is unknown", self.camera.name,
                            now - self._last_frame(), change.region)
                self._publish(change)

    def _publish(self, change: Change) -> None:
        event = change.event()
        if change.state != UNKNOWN:
            log.info("camera %s: region %s is %s (was %s, score %.2f)", change.source, change.region, change.state,
                     change.previous, change.score or 0.0)
        self._sink.append(event)
        self._metrics.region_changed(change.source, change.region, change.state, change.previous,
                                     declared=bool(self._regions[change.region].states))
        if self._mqtt is not None:
            self._mqtt.add_state(change.source, change.region, change.state)
            self._mqtt.add_event(event)
