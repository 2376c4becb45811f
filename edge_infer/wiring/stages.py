"""The daemon's stages built from the config and the model serving it, wired to one another.

The sources, the preprocessing workers with their decoders, the inference threads sharing one
session, the writer with its sinks (JSON result files, camera JSON Lines, the MQTT spool and
publisher), and the camera stages with their regions. ``app.py`` starts them; nothing here starts a
thread.
"""
from __future__ import annotations

import queue
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..classifier.session import ModelSession, SessionOptions
from ..commit.inflight import InflightJournal
from ..commit.parked import ParkedInputs
from ..commit.writer import ResultWriter, SourceRoute
from ..config import AppConfig, CameraSourceConfig, FolderSourceConfig
from ..decoding.processes import build_decoders
from ..ops.faults import Faults
from ..ops.metrics import Metrics
from ..pipeline.inference import InferenceStage
from ..pipeline.jobs import CameraFrame, FolderInput, Job, Ticket
from ..pipeline.plan import ThreadPlan
from ..pipeline.state import PipelineState
from ..pipeline.tensor_pool import TensorPool
from ..pipeline.workers import PreprocessWorker
from ..regions.crops import RegionCrop, region_crops
from ..regions.lines import CameraLines
from ..regions.stage import RegionsStage
from ..regions.watcher import RegionWatch
from ..sinks.homeassistant import discovery_messages, state_topics
from ..sinks.jsonl import JsonlSink
from ..sinks.mqtt_publisher import MqttPublisher
from ..sinks.mqtt_records import MqttSink, device_name, read_password
from ..sinks.samples import SampleStore
from ..sinks.spool import Spool
from ..sources.folder import FolderSource

if TYPE_CHECKING:
    from ..sources.camera import CameraSource


@dataclass
class Stages:
    """Every stage of one daemon, filled in as it is built: a build that fails part way leaves what
    it made for the shutdown to stop and close."""
    sources: list[FolderSource] = field(default_factory=list)
    cameras: list[CameraSource] = field(default_factory=list)
    workers: list[PreprocessWorker] = field(default_factory=list)
    inference: list[InferenceStage] = field(default_factory=list)  # sharing one session
    writer: ResultWriter | None = None
    regions: RegionsStage | None = None  # with cameras: frames, JSON Lines, regions
    pool: TensorPool | None = None  # a dead stage's tensors go back to it
    spool: Spool | None = None
    publisher: MqttPublisher | None = None


@dataclass(frozen=True)
class Shared:
    """What the app made before the model loaded, handed to the stages: the queues between them and
    the stores they share."""
    jobs: queue.Queue[FolderInput]
    prepared: queue.Queue[Job | Ticket]
    finished: queue.Queue[FolderInput | list[FolderInput]]  # inputs, or batches
    frames: queue.Queue[list[CameraFrame]]  # camera frames, inferred, for the regions stage
    metrics: Metrics
    journal: InflightJournal
    parked: ParkedInputs
    faults: Faults


def camera_region_crops(cams: list[CameraSourceConfig], serving: ModelSession, intra_op: int,
                        warm_batch: int) -> dict[str, tuple[RegionCrop, ...]]:
    """Each camera's regions with their own models loaded (once per file) and checked against
    them."""
    loaded: dict[Path, ModelSession] = {}

    def load(path: Path) -> ModelSession:
        if path not in loaded:
            loaded[path] = ModelSession.load(path, SessionOptions(intra_op_threads=intra_op))
            loaded[path].warm_up(warm_batch)
        return loaded[path]

    return {cam.name: region_crops(cam, serving, load) for cam in cams}


class StageBuilder:
    def __init__(self, config: AppConfig, plan: ThreadPlan, shared: Shared) -> None:
        self.config, self.plan, self.shared = config, plan, shared

    def build(self, into: Stages, session: ModelSession, state: PipelineState) -> None:
        c, m, sh = self.config, session.manifest, self.shared
        into.sources = [FolderSource(config=s, jobs=sh.jobs, state=state, metrics=sh.metrics,
                                     parked=sh.parked)
                        for s in c.sources if isinstance(s, FolderSourceConfig)]
        routes = {src.config.name: SourceRoute(src.config.after, src.config.done_dir,
                                               src.config.failed_dir, src.done, src.root,
                                               src.config.min_score)
                  for src in into.sources}
        cams = [s for s in c.sources if isinstance(s, CameraSourceConfig)]
        crops = camera_region_crops(cams, session, self.plan.intra_op, c.batch.max_size)
        sinks = {cam.name: CameraLines(JsonlSink(c.output.dir / cam.name, cam.name,
                                                 cam.rotate_bytes, cam.keep_files), cam.name)
                 for cam in cams}
        mqtt = self._mqtt(into, cams)
        lanes = self.plan.inference_threads
        # uint8 crops: a batch being collected by each inference thread and one more waiting, one
        # per busy worker, one per camera region (or whole frame).
        crop = m.preprocess.crop
        count = ((lanes + 1) * c.batch.max_size + self.plan.workers
                 + sum(max(1, len(cam.regions)) for cam in cams))
        pool = into.pool = TensorPool(count, (crop, crop, 3), np.uint8)
        into.inference = [
            InferenceStage(session=session, prepared=sh.prepared, finished=sh.finished,
                           metrics=sh.metrics, top=c.model.top_k, max_size=c.batch.max_size,
                           max_wait_s=c.batch.max_wait_ms / 1000.0, pool=pool, state=state,
                           name=f"inference-{i}", trims_heap=i == 0, frames=sh.frames)
            for i in range(lanes)]
        decoders = build_decoders(c.pipeline, self.plan.workers, m.preprocess, pool, sh.metrics)
        into.workers = [
            PreprocessWorker(index=i, jobs=sh.jobs, prepared=sh.prepared, finished=sh.finished,
                             decoder=decoder, output_dir=c.output.dir,
                             max_bytes=c.pipeline.max_file_bytes,
                             decode_timeout_s=c.pipeline.decode_timeout_s, pool=pool, state=state,
                             journal=sh.journal, faults=sh.faults)
            for i, decoder in enumerate(decoders)]
        if cams:
            from ..sources.camera import CameraSource  # PyAV loads only when a camera is configured

            into.cameras = [CameraSource(config=cam, prepared=sh.prepared, pool=pool,
                                         spec=m.preprocess, metrics=sh.metrics,
                                         max_pixels=c.pipeline.max_pixels,
                                         regions=crops[cam.name])
                            for cam in cams]
        watches = {cam.config.name: self._region_watch(cam, sinks[cam.config.name], mqtt)
                   for cam in into.cameras if cam.config.regions}
        # Results name the model that made them; error results, the one serving now (a reload may
        # swap it).
        into.writer = ResultWriter(finished=sh.finished, output_dir=c.output.dir, routes=routes,
                                   metrics=sh.metrics, state=state, mqtt=mqtt,
                                   journal=sh.journal, parked=sh.parked, faults=sh.faults)
        if cams:
            into.regions = RegionsStage(frames=sh.frames, lines=sinks, watches=watches, mqtt=mqtt,
                                        metrics=sh.metrics, state=state)

    def _region_watch(self, cam: CameraSource, sink: CameraLines,
                      mqtt: MqttSink | None) -> RegionWatch:
        cfg = cam.config
        samples = None if cfg.samples_dir is None else SampleStore(
            cfg.samples_dir, max_files=cfg.samples_max_files, max_bytes=cfg.samples_max_bytes,
            per_hour={r.name: r.samples_per_hour for r in cfg.regions})
        return RegionWatch(camera=cfg, sink=sink, mqtt=mqtt, metrics=self.shared.metrics,
                           samples=samples, last_frame=lambda: cam.last_frame_at)

    def _mqtt(self, into: Stages, cams: list[CameraSourceConfig]) -> MqttSink | None:
        cfg, out, metrics = self.config.output.mqtt, self.config.output.dir, self.shared.metrics
        if cfg is None:
            return None
        device = device_name(cfg)
        spool = into.spool = Spool(cfg.spool_dir or out / ".mqtt-spool", cfg.spool_max_bytes,
                                   cfg.on_full)
        metrics.mqtt_spool_bytes.set(spool.disk_bytes)
        into.publisher = MqttPublisher(cfg=cfg, device=device, spool=spool, metrics=metrics,
                                       password=read_password(cfg),
                                       discovery=discovery_messages(cfg, device, cams),
                                       state_topics=tuple(state_topics(cfg, device, cams)))
        return MqttSink(cfg=cfg, device=device, spool=spool, metrics=metrics)
