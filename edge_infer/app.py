"""The daemon: builds every stage, starts them in order, supervises them, and shuts down in order.

Only this module knows every stage. Start order: HTTP (so /readyz answers 503 during warm-up), model,
writer, inference, workers, then the sources; READY=1 once all are armed. Each is registered with one
``Supervisor`` as it starts (see ops/supervisor.py). Stop order: sources first (no new work), drain what is in
flight within ``shutdown.drain_timeout_s``, then the stages downstream-last, HTTP last, every join bounded
by one deadline: the drain plus ``SHUTDOWN_MARGIN_S``.

Longer than 300 lines: the one module that knows every stage, and building, starting, supervising and
stopping them read best side by side.
"""
from __future__ import annotations

import logging
import os
import queue
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry

from .classifier.reload import ModelReloader
from .classifier.session import ModelSession, SessionOptions
from .commit.inflight import JOURNAL_NAME, InflightJournal
from .commit.parked import PARKED_NAME, ParkedInputs
from .commit.writer import ResultWriter, SourceRoute
from .config import AppConfig, CameraSource, FolderSource as FolderSourceConfig
from .decoding.processes import build_decoders
from .lifecycle import ShutdownFlags, Stage
from .ops.faults import Faults
from .ops.memory import heap_trimmer, memory_limit_bytes
from .ops.metrics import Metrics
from .ops.preflight import check_supported
from .ops.supervisor import SHUTDOWN_MARGIN_S, Deadline, Probe, Supervisor
from .ops.systemd import Notifier
from .ops.web import HttpServer
from .pipeline.inference import InferenceStage
from .pipeline.jobs import Job
from .pipeline.plan import plan_threads
from .pipeline.state import PipelineState
from .pipeline.tensor_pool import TensorPool
from .pipeline.workers import PreprocessWorker
from .regions.crops import RegionCrop, region_crops
from .regions.lines import CameraLines
from .regions.stage import RegionsStage
from .regions.watcher import RegionWatch
from .sinks.durable import make_dirs
from .sinks.homeassistant import discovery_messages, state_topics
from .sinks.jsonl import JsonlSink
from .sinks.mqtt_publisher import CLOSE_S, MqttPublisher
from .sinks.mqtt_records import MqttSink, device_name, read_password
from .sinks.samples import SampleStore
from .sinks.spool import Spool
from .sources.folder import FolderSource
from .sources.inbox_lock import InboxLocks

if TYPE_CHECKING:
    from .sources.camera import CameraSource as CameraStage

log = logging.getLogger(__name__)
HANG_TIMEOUT_S = 30.0  # a stage loop silent this long is hung: /healthz fails, WATCHDOG=1 stops
STATUS_EVERY_S = 10.0


class App:
    """One daemon instance. Everything it owns is created here and passed down; nothing is global."""

    def __init__(self, config: AppConfig, notifier: Notifier | None = None,
                 registry: CollectorRegistry | None = None, hang_timeout_s: float = HANG_TIMEOUT_S,
                 faults: Faults = Faults()) -> None:
        self.faults = faults
        check_supported(config)
        self.hang_timeout_s = hang_timeout_s
        self.config = config
        self.plan = plan_threads(config, os.cpu_count() or 1)
        self.notifier = notifier or Notifier(None)
        self.registry = registry or CollectorRegistry()
        self.metrics = Metrics(self.registry, config.metrics.max_label_classes)
        self.ready = False
        self.draining = False
        self.state: PipelineState | None = None  # made with the model it serves
        p = config.pipeline
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=p.queue_size)
        # Bounded by the tensor pool: at most pool.count prepared images exist at once.
        self.prepared: queue.Queue[Job] = queue.Queue()
        self.finished: queue.Queue[Job | list[Job]] = queue.Queue(maxsize=p.queue_size)  # jobs, or batches
        # Camera frames, inferred, for the regions stage.
        self.frames: queue.Queue[list[Job]] = queue.Queue(maxsize=p.queue_size)
        m = config.metrics
        self.http = HttpServer(host=m.host, port=m.port, registry=self.registry, is_alive=self.is_alive,
                               is_ready=self.is_ready, refused=self.metrics.http_refused_total,
                               web_config=m.web_config, max_connections=m.max_connections,
                               request_timeout_s=m.request_timeout_s)
        self.sources: list[FolderSource] = []
        self.cameras: list[CameraStage] = []
        self.workers: list[PreprocessWorker] = []
        self.reloader: ModelReloader | None = None
        self.inference: list[InferenceStage] = []  # pipeline.inference_threads of them, sharing one session
        self.writer: ResultWriter | None = None
        self.regions: RegionsStage | None = None  # with cameras: frames, JSON Lines, regions
        self.journal = InflightJournal(config.output.dir / JOURNAL_NAME)
        self.parked = ParkedInputs(config.output.dir / PARKED_NAME, self.metrics)
        self.spool: Spool | None = None
        self.publisher: MqttPublisher | None = None
        self.pool: TensorPool | None = None
        self.supervisor = Supervisor(on_restart=self.metrics.stage_restarted, give_back=self._give_back,
                                     fault_for=faults.stage_fault)
        self.abandoned: list[str] = []  # stages shutdown gave up on (cli exits 1)

    @property
    def in_flight(self) -> int:
        """Inputs taken from the sources and not yet acknowledged."""
        return self.state.in_flight.value if self.state is not None else 0

    # -- health ---------------------------------------------------------------------------------------------
    def is_alive(self) -> bool:
        """Every stage runs (or is being restarted within its intensity) and none is hung."""
        return self.supervisor.healthy()

    def is_ready(self) -> bool:
        # A blocked output (disk full, read-only, ...) takes no new inputs: not ready, yet alive, since a
        # restart would not help and the writer resumes by itself.
        blocked = self.writer is not None and self.writer.blocked_kind is not None
        return self.ready and not self.draining and not blocked and self.is_alive()

    # -- startup --------------------------------------------------------------------------------------------
    def startup(self) -> None:
        c = self.config
        self.http.start()
        # Not restarted in place: its port would have to be bound again; a dead server fails the probes anyway.
        http = self.http
        self.supervisor.watch(Probe("http", "http", http.alive, stopping=lambda: self.draining,
                                    inject=lambda: http._server.socket.close()))  # type: ignore[union-attr]
        log.info("metrics and health on http://%s:%d/", c.metrics.host, self.http.port)
        self.notifier.status("loading model")
        options = SessionOptions(intra_op_threads=self.plan.intra_op)
        session = ModelSession.load(c.model.path, options)
        session.warm_up(c.batch.max_size)
        # Loading frees what graph optimisation and prepacking copied (about 4 MB here), and glibc keeps it.
        heap_trimmer()()
        self.metrics.set_model(session.manifest.name, session.sha256, session.precision)
        self.metrics.set_labels(session.manifest.labels)
        limit = memory_limit_bytes()
        if limit is not None:
            self.metrics.set_memory_limit(limit)
        make_dirs(c.output.dir)  # durably: a power cut must not take back the folder with the results in it
        self.journal.open()
        self.parked.load()
        self.state = PipelineState(jobs=self.jobs, serving=session)
        self._build_stages(session, self.state)
        self.notifier.status("starting decoders")
        for worker in self.workers:
            worker.start_decoder()
        # The embedded model changes only with the package, so only a configured file is watched.
        state = self.state
        self.reloader = ModelReloader(path=session.path, options=options, warm_batch=c.batch.max_size,
                                      serving=lambda: state.serving, swap=self._offer, metrics=self.metrics,
                                      watch=c.model.path is not None)
        self._start(self.reloader)
        # The publisher first: results spooled before a restart go out while the model warms the rest up.
        for stage in (self.publisher, self.writer, self.regions, *self.inference, *self.workers):
            if stage is None:
                continue
            self._start(stage)
        for src in self.sources:
            self.metrics.init_source(src.config.name, "folder")
            self._start(src)
            self.supervisor.watch(Probe("observer", f"observer-{src.config.name}", src.observer_alive,
                                        src.restart_observer, src.break_observer, src.stopping))
        for cam in self.cameras:
            self._start(cam)  # armed at once; each connects in its own thread and may be down: see camera_up
        self.ready = True
        self.metrics.set_ready(True)
        # With its status in the same datagram: `systemctl status` never shows active with "loading model".
        self.notifier.notify(READY=1, STATUS=self.status_line())
        log.info("ready: model %s (%s, %s), %d folder(s), %d camera(s), %d worker(s), %d inference thread(s) of "
                 "%d onnxruntime thread(s)", session.manifest.name, session.precision, session.sha256[:12],
                 len(self.sources), len(self.cameras), len(self.workers), len(self.inference), self.plan.intra_op)

    def _start(self, stage: Stage) -> None:
        # Loops that beat at least every poll_s: hung past the limit (a worker may wait out two decodes).
        if stage.kind in ("writer", "regions", "inference", "source"):
            stage.hang_s = self.hang_timeout_s
        elif stage.kind == "preprocess":
            stage.hang_s = self.hang_timeout_s + 2 * self.config.pipeline.decode_timeout_s
        self.supervisor.watch(stage)
        stage.start()

    def _give_back(self, job: Job) -> None:
        """A job a dead stage held: its tensor back to the pool; a folder input offered again (a camera
        frame is dropped, as a busy daemon drops frames)."""
        if job.tensor is not None and self.pool is not None:
            self.pool.release(job.tensor)
            job.tensor = None
        src = next((s for s in self.sources if s.config.name == job.source), None)
        if job.path is not None and src is not None and src.give_back(job):
            log.warning("%s/%r was in hand of a stage that died; offered again", job.source, job.rel)

    def _offer(self, session: ModelSession) -> None:
        """A self-tested model for every inference thread; each swaps it in between two of its batches.
        The metrics say so at once: an idle daemon swaps only at its next input."""
        for stage in self.inference:
            stage.offer(session)
        self.metrics.set_model(session.manifest.name, session.sha256, session.precision)
        self.metrics.set_labels(session.manifest.labels)

    def _build_stages(self, session: ModelSession, state: PipelineState) -> None:
        c, m = self.config, session.manifest
        self.sources = [FolderSource(config=s, jobs=self.jobs, state=state, metrics=self.metrics, parked=self.parked)
                        for s in c.sources if isinstance(s, FolderSourceConfig)]
        routes = {src.config.name: SourceRoute(src.config.after, src.config.done_dir, src.config.failed_dir, src.done,
                                               src.root, src.config.min_score) for src in self.sources}
        cams = [s for s in c.sources if isinstance(s, CameraSource)]
        crops = self._region_crops(cams, session)
        sinks = {cam.name: CameraLines(JsonlSink(c.output.dir / cam.name, cam.name,
                                                 cam.rotate_bytes, cam.keep_files), cam.name)
                 for cam in cams}
        mqtt = self._build_mqtt(cams)
        lanes = self.plan.inference_threads
        # uint8 crops: a batch being collected by each inference thread and one more waiting, one per busy
        # worker, one per camera region (or whole frame).
        crop = m.preprocess.crop
        pool = TensorPool((lanes + 1) * c.batch.max_size + self.plan.workers + sum(max(1, len(cam.regions))
                                                                                    for cam in cams),
                          (crop, crop, 3), np.uint8)
        self.pool = pool  # a dead stage's tensors go back to it
        self.inference = [InferenceStage(session=session, prepared=self.prepared, finished=self.finished,
                                         metrics=self.metrics, top=c.model.top_k, max_size=c.batch.max_size,
                                         max_wait_s=c.batch.max_wait_ms / 1000.0, pool=pool, state=state,
                                         name=f"inference-{i}", trims_heap=i == 0,
                                         frames=self.frames)
                          for i in range(lanes)]
        decoders = build_decoders(c.pipeline, self.plan.workers, m.preprocess, pool, self.metrics)
        self.workers = [PreprocessWorker(index=i, jobs=self.jobs, prepared=self.prepared, finished=self.finished,
                                         decoder=decoder, output_dir=c.output.dir,
                                         max_bytes=c.pipeline.max_file_bytes,
                                         decode_timeout_s=c.pipeline.decode_timeout_s, pool=pool, state=state,
                                         journal=self.journal, faults=self.faults)
                        for i, decoder in enumerate(decoders)]
        if cams:
            from .sources.camera import CameraSource as CameraStage  # PyAV loads only when a camera is configured

            self.cameras = [CameraStage(config=cam, prepared=self.prepared, pool=pool, spec=m.preprocess,
                                        metrics=self.metrics, max_pixels=c.pipeline.max_pixels,
                                        regions=crops[cam.name]) for cam in cams]
        watches = {cam.config.name: self._region_watch(cam, sinks[cam.config.name], mqtt)
                   for cam in self.cameras if cam.config.regions}
        # Results name the model that made them; error results, the one serving now (a reload may swap it).
        self.writer = ResultWriter(finished=self.finished, output_dir=c.output.dir, routes=routes,
                                   metrics=self.metrics, state=state, mqtt=mqtt,
                                   journal=self.journal, parked=self.parked, faults=self.faults)
        if cams:
            self.regions = RegionsStage(frames=self.frames, lines=sinks, watches=watches, mqtt=mqtt,
                                        metrics=self.metrics, state=state)

    def _region_crops(self, cams: list[CameraSource], serving: ModelSession) -> dict[str, tuple[RegionCrop, ...]]:
        """Each camera's regions with their own models loaded (once per file) and checked against them."""
        loaded: dict[Path, ModelSession] = {}

        def load(path: Path) -> ModelSession:
            if path not in loaded:
                loaded[path] = ModelSession.load(path, SessionOptions(intra_op_threads=self.plan.intra_op))
                loaded[path].warm_up(self.config.batch.max_size)
            return loaded[path]

        return {cam.name: region_crops(cam, serving, load) for cam in cams}

    def _region_watch(self, cam: CameraStage, sink: CameraLines,
                      mqtt: MqttSink | None) -> RegionWatch:
        cfg = cam.config
        samples = None if cfg.samples_dir is None else SampleStore(
            cfg.samples_dir, max_files=cfg.samples_max_files, max_bytes=cfg.samples_max_bytes,
            per_hour={r.name: r.samples_per_hour for r in cfg.regions})
        return RegionWatch(camera=cfg, sink=sink, mqtt=mqtt, metrics=self.metrics, samples=samples,
                           last_frame=lambda: cam.last_frame_at)

    def _build_mqtt(self, cams: list[CameraSource]) -> MqttSink | None:
        cfg, out = self.config.output.mqtt, self.config.output.dir
        if cfg is None:
            return None
        device = device_name(cfg)
        self.spool = Spool(cfg.spool_dir or out / ".mqtt-spool", cfg.spool_max_bytes, cfg.on_full)
        self.metrics.mqtt_spool_bytes.set(self.spool.disk_bytes)
        self.publisher = MqttPublisher(cfg=cfg, device=device, spool=self.spool, metrics=self.metrics,
                                       password=read_password(cfg), discovery=discovery_messages(cfg, device, cams),
                                       state_topics=tuple(state_topics(cfg, device, cams)))
        return MqttSink(cfg=cfg, device=device, spool=self.spool, metrics=self.metrics)

    # -- main loop ------------------------------------------------------------------------------------------
    def main_loop(self, flags: ShutdownFlags) -> None:
        interval = self.notifier.watchdog_interval
        tick = min(0.5, interval) if interval else 0.5
        next_status = 0.0
        was_alive = True
        was_blocked: str | None = None
        while not flags.should_exit.wait(tick):
            if flags.reload.is_set() and self.reloader is not None:
                flags.reload.clear()
                self.reloader.request()
            self.metrics.set_queue_depth(self.jobs.qsize() + self.prepared.qsize()
                                         + self.finished.qsize() + self.frames.qsize())
            self.metrics.set_ready(self.is_ready())
            blocked = self.writer.blocked_kind if self.writer else None
            if blocked != was_blocked:  # a blocked output shows in STATUS= at once, not at the next update
                was_blocked, next_status = blocked, 0.0
            self.metrics.set_inputs_in_flight(self.in_flight)
            self.supervisor.check()
            alive = self.is_alive()
            if alive:
                # Only while every stage runs and none is hung is systemd's watchdog fed.
                self.notifier.watchdog()
            if alive != was_alive:  # log the change, not every tick
                if alive:
                    log.warning("every stage healthy again")
                else:
                    log.error("unhealthy (%s); systemd's watchdog is no longer fed",
                              "; ".join(self.supervisor.problems()))
                was_alive, next_status = alive, 0.0
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                self.notifier.status(self.status_line())

    def status_line(self) -> str:
        blocked = self.writer.blocked_reason if self.writer else None
        mqtt = (f"; mqtt {'connected' if self.publisher.connected else 'offline'}, {self.spool.pending} spooled"
                if self.publisher and self.spool else "")
        problems = self.supervisor.problems()
        return (f"{'draining' if self.draining else 'ready' if self.ready else 'starting'}; "
                f"{self.in_flight} in flight; queue {self.jobs.qsize()}" + mqtt
                + (f"; {blocked}" if blocked else "") + (f"; unhealthy: {', '.join(problems)}" if problems else ""))

    # -- shutdown -------------------------------------------------------------------------------------------
    def shutdown(self, flags: ShutdownFlags) -> bool:
        """Stop sources, drain, stop the rest, all within one deadline (a second signal cuts it to a second);
        True when every stage stopped in time, else ``abandoned`` names those that did not."""
        drain_s = self.config.shutdown.drain_timeout_s
        deadline = Deadline(drain_s + SHUTDOWN_MARGIN_S, flags.force_exit)
        drain = Deadline(drain_s, flags.force_exit)
        self.draining = True
        self.metrics.set_ready(False)
        self.notifier.stopping()
        self.notifier.status("draining")
        if self.reloader is not None:
            self.reloader.stop()  # first: no model swap while draining (joined last: it may be loading one)
        self._join_all(deadline, (*self.sources, *self.cameras))
        while self.in_flight > 0 and drain.left() > 0 and not flags.force_exit.is_set():
            self.supervisor.check()  # a stage dying mid-drain is restarted (and gives its inputs back) too
            time.sleep(0.05)
        if self.in_flight > 0:
            log.warning("drain ended with %d input(s) unacknowledged; they stay in place for the next start",
                        self.in_flight)
        self._join_all(deadline, (*self.workers, *self.inference, self.writer, self.regions))
        if self.publisher is not None:
            # Everything is spooled by now: send what the drain allows, then say offline and disconnect.
            self.publisher.drain(time.monotonic() + min(drain.left(), max(0.0, deadline.left() - CLOSE_S)))
            self._join_all(deadline, (self.publisher,))
        if self.spool is not None and "mqtt" not in self.abandoned:
            self.spool.close()
        self.http.stop()
        self._join_all(deadline, (self.http, self.reloader))
        self.journal.close()  # a clean exit: nothing in flight now is held against any input
        if self.abandoned:
            log.error("stopped, abandoning stage(s) that did not stop within the shutdown deadline: %s",
                      ", ".join(self.abandoned))
        else:
            log.info("stopped")
        return not self.abandoned

    def _join_all(self, deadline: Deadline, stages: tuple[Stage | HttpServer | None, ...]) -> None:
        for stage in stages:
            if stage is not None:
                stage.stop()
        for stage in stages:
            if stage is not None and not deadline.join(stage):
                self.abandoned.append(getattr(stage, "name", "http"))

    def serve(self, flags: ShutdownFlags) -> bool:
        """Run until asked to stop; True when the shutdown was clean (nothing abandoned)."""
        inboxes = InboxLocks()
        inboxes.hold(self.config)  # first: a second daemon on them starts and writes nothing
        try:
            self.startup()
            self.main_loop(flags)
        finally:
            clean = self.shutdown(flags)
        if clean:  # else held until the process exits: a stage left running may touch an inbox
            inboxes.release()
        return clean
