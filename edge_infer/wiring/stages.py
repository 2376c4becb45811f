"""The daemon's stages built from the config and the model serving it, wired to one another.

The sources, the preprocessing workers with their decoders, the inference threads sharing one
session, the writer with its sinks (JSON result files, camera JSON Lines, the MQTT spool and
publisher), and the camera stages with their regions. ``app.py`` starts them; nothing here starts a
thread.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..classifier.session import ModelSession, SessionOptions
from ..commit.writer import ResultWriter, SourceRoute
from ..config import AppConfig, CameraSourceConfig, FolderSourceConfig
from ..decoding.processes import build_decoders
from ..pipeline.inference import InferenceStage
from ..pipeline.context import StageContext
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
    def __init__(self, config: AppConfig, plan: ThreadPlan, ctx: StageContext) -> None:
        assert ctx.metrics is not None
        self.config, self.plan, self.ctx, self.metrics = config, plan, ctx, ctx.metrics

    def build(self, into: Stages, session: ModelSession, state: PipelineState) -> None:
        c, m = self.config, session.manifest
        ctx = replace(self.ctx, state=state)
        into.sources = [FolderSource(ctx, config=s) for s in c.sources
                        if isinstance(s, FolderSourceConfig)]
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
        ctx = replace(ctx, pool=pool)
        into.inference = [
            InferenceStage(ctx, session=session, top=c.model.top_k, max_size=c.batch.max_size,
                           max_wait_s=c.batch.max_wait_ms / 1000.0, name=f"inference-{i}",
                           trims_heap=i == 0)
            for i in range(lanes)]
        decoders = build_decoders(c.pipeline, self.plan.workers, m.preprocess, pool, self.metrics)
        into.workers = [
            PreprocessWorker(ctx, index=i, decoder=decoder, output_dir=c.output.dir,
                             max_bytes=c.pipeline.max_file_bytes,
                             decode_timeout_s=c.pipeline.decode_timeout_s)
            for i, decoder in enumerate(decoders)]
        if cams:
            from ..sources.camera import CameraSource  # PyAV loads only when a camera is configured

            into.cameras = [CameraSource(config=cam, prepared=ctx.prepared, pool=pool,
                                         spec=m.preprocess, metrics=self.metrics,
                                         max_pixels=c.pipeline.max_pixels,
                                         regions=crops[cam.name])
                            for cam in cams]
        watches = {cam.config.name: self._region_watch(cam, sinks[cam.config.name], mqtt)
                   for cam in into.cameras if cam.config.regions}
        # Results name the model that made them; error results, the one serving now (a reload may
        # swap it).
        into.writer = ResultWriter(ctx, output_dir=c.output.dir, routes=routes, mqtt=mqtt)
        if cams:
            into.regions = RegionsStage(ctx, lines=sinks, watches=watches, mqtt=mqtt)

    def _region_watch(self, cam: CameraSource, sink: CameraLines,
                      mqtt: MqttSink | None) -> RegionWatch:
        cfg = cam.config
        samples = None if cfg.samples_dir is None else SampleStore(
            cfg.samples_dir, max_files=cfg.samples_max_files, max_bytes=cfg.samples_max_bytes,
            per_hour={r.name: r.samples_per_hour for r in cfg.regions})
        return RegionWatch(camera=cfg, sink=sink, mqtt=mqtt, metrics=self.metrics,
                           samples=samples, last_frame=lambda: cam.last_frame_at)

    def _mqtt(self, into: Stages, cams: list[CameraSourceConfig]) -> MqttSink | None:
        cfg, out, metrics = self.config.output.mqtt, self.config.output.dir, self.metrics
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
