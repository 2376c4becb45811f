"""The regions stage: camera frames, once inferred -> their camera's JSON Lines, the region state
machines, samples and their MQTT messages.

A stage of its own, beside the writer (which commits folder inputs only): its loop ticks every
camera's regions at least every ``poll_s``, so a camera that has delivered no frame for its
``stall_after_s`` has its regions ``unknown`` in time whatever the output disk does, even while the
writer holds a folder input until a full disk takes it. A frame in hand when this stage dies is
dropped, as a busy daemon drops frames.
"""
from __future__ import annotations

import logging
import queue
import time

from ..lifecycle import Stage
from ..ops.metrics import Metrics
from ..pipeline.context import StageContext
from ..pipeline.jobs import CameraFrame
from ..pipeline.outcomes import job_record, observe
from ..pipeline.records import frame_result
from ..pipeline.state import PipelineState
from ..sinks.mqtt_records import MqttSink
from .lines import CameraLines
from .watcher import RegionWatch

log = logging.getLogger(__name__)


class RegionsStage(Stage):
    """frames -> JSON Lines, region states, samples, MQTT."""

    kind = "regions"

    def __init__(self, ctx: StageContext, *, lines: dict[str, CameraLines],
                 watches: dict[str, RegionWatch], mqtt: MqttSink | None) -> None:
        super().__init__("regions")
        assert ctx.metrics is not None and ctx.state is not None
        self._frames, self._lines, self._watches = ctx.frames, lines, watches
        self._mqtt = mqtt
        self._metrics: Metrics = ctx.metrics
        self._state: PipelineState = ctx.state

    def run(self) -> None:
        for watch in self._watches.values():
            watch.start()
        try:
            while self.should_keep_running():
                for watch in self._watches.values():
                    watch.tick()
                try:
                    jobs = self._frames.get(timeout=self.poll_s)
                except queue.Empty:
                    continue
                self.in_hand = jobs
                for job in jobs:
                    self._finish(job)
                self.in_hand = []
        finally:
            for lines in self._lines.values():
                lines.close()

    def _finish(self, job: CameraFrame) -> None:
        """One line in its camera's JSON Lines (every frame, or with regions only when asked to),
        and the region's state machine; there is no input to acknowledge."""
        t0 = time.monotonic()
        assert job.frame is not None
        watch = self._watches.get(job.source)
        if watch is None or watch.camera.every_frame:
            line = frame_result(job_record(job, self._state.model_ref()), job.frame)
            if job.region is not None:
                line["region"] = job.region
            self._lines[job.source].append(line)
            if self._mqtt is not None:
                self._mqtt.add_frame(line)
        if watch is not None:
            watch.observe(job)
        observe(self._metrics, job, time.monotonic() - t0)
