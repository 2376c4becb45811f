"""The daemon: builds every stage, starts them in order, supervises them, and shuts down in order.

Only this module knows every stage. Start order: HTTP (so /readyz answers 503 during warm-up), model,
writer, inference, workers, then the sources; READY=1 once all are armed. Stop order: sources first (no new
work), drain what is in flight within ``shutdown.drain_timeout_s``, then the stages downstream-last, HTTP last.
"""
from __future__ import annotations

import logging
import os
import queue
import time
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry

from .config import AppConfig, CameraSource, FolderSource as FolderSourceConfig
from .lifecycle import ShutdownFlags
from .model.reload import ModelReloader
from .model.session import ModelSession, SessionOptions
from .ops.faults import Faults
from .ops.memory import heap_trimmer, memory_limit_bytes
from .ops.metrics import Metrics
from .ops.preflight import check_supported
from .ops.systemd import Notifier
from .ops.web import HttpServer
from .pipeline.decoders import build_decoders
from .pipeline.inference import InferenceStage
from .pipeline.inflight import JOURNAL_NAME, InflightJournal
from .pipeline.jobs import Job
from .pipeline.plan import plan_threads
from .pipeline.state import PipelineState
from .pipeline.tensor_pool import TensorPool
from .pipeline.workers import PreprocessWorker
from .pipeline.writer import ResultWriter, SourceRoute
from .sinks.jsonl import JsonlSink
from .sinks.mqtt import CLOSE_S, MqttPublisher, MqttSink, device_name, read_password
from .sinks.spool import Spool
from .sources.folder import FolderSource

if TYPE_CHECKING:
    from .sources.camera import CameraSource as CameraStage

log = logging.getLogger(__name__)
HANG_TIMEOUT_S = 30.0  # an inference loop silent this long is hung: /healthz fails, WATCHDOG=1 stops
STATUS_EVERY_S = 10.0
STAGE_JOIN_S = 2.0


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
        self.metrics = Metrics(self.registry)
        self.ready = False
        self.draining = False
        self.state: PipelineState | None = None  # made with the model it serves
        p = config.pipeline
        self.jobs: queue.Queue[Job] = queue.Queue(maxsize=p.queue_size)
        # Bounded by the tensor pool: at most pool.count prepared images exist at once.
        self.prepared: queue.Queue[Job] = queue.Queue()
        self.finished: queue.Queue[Job | list[Job]] = queue.Queue(maxsize=p.queue_size)  # jobs, or batches
        self.http = HttpServer(host=config.metrics.host, port=config.metrics.port, registry=self.registry,
                               is_alive=self.is_alive, is_ready=self.is_ready)
        self.sources: list[FolderSource] = []
        self.cameras: list[CameraStage] = []
        self.workers: list[PreprocessWorker] = []
        self.reloader: ModelReloader | None = None
        self.inference: list[InferenceStage] = []  # pipeline.inference_threads of them, sharing one session
        self.writer: ResultWriter | None = None
        self.journal = InflightJournal(config.output.dir / JOURNAL_NAME)
        self.spool: Spool | None = None
        self.publisher: MqttPublisher | None = None

    @property
    def in_flight(self) -> int:
        """Inputs taken from the sources and not yet acknowledged."""
        return self.state.in_flight.value if self.state is not None else 0

    # -- health ---------------------------------------------------------------------------------------------
    def is_alive(self) -> bool:
        if not self.inference:
            return True  # still starting: alive, not ready
        return all(i.healthy() and i.heartbeat.age() < self.hang_timeout_s for i in self.inference)

    def is_ready(self) -> bool:
        # A blocked output (disk full, read-only, ...) takes no new inputs: not ready, yet alive, since a
        # restart would not help and the writer resumes by itself.
        blocked = self.writer is not None and self.writer.blocked_kind is not None
        return self.ready and not self.draining and not blocked and self.is_alive()

    # -- startup --------------------------------------------------------------------------------------------
    def startup(self) -> None:
        c = self.config
        self.http.start()
        log.info("metrics and health on http://%s:%d/", c.metrics.host, self.http.port)
        self.notifier.status("loading model")
        options = SessionOptions(intra_op_threads=self.plan.intra_op)
        session = ModelSession.load(c.model.path, options)
        session.warm_up(c.batch.max_size)
        # Loading frees what graph optimisation and prepacking copied (about 4 MB here), and glibc keeps it.
        heap_trimmer()()
        self.metrics.set_model(session.manifest.name, session.sha256, session.precision)
        limit = memory_limit_bytes()
        if limit is not None:
            self.metrics.set_memory_limit(limit)
        c.output.dir.mkdir(parents=True, exist_ok=True)
        self.journal.open()
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
        self.reloader.start()
        # The publisher first: results spooled before a restart go out while the model warms the rest up.
        for stage in (self.publisher, self.writer, *self.inference, *self.workers):
            if stage is None:
                continue
            stage.start()
        for src in self.sources:
            self.metrics.init_source(src.config.name, "folder")
            src.start()
        for cam in self.cameras:
            cam.start()  # armed at once; each connects in its own thread and may be down: see camera_up
        self.ready = True
        self.metrics.set_ready(True)
        # With its status in the same datagram: `systemctl status` never shows active with "loading model".
        self.notifier.notify(READY=1, STATUS=self.status_line())
        log.info("ready: model %s (%s, %s), %d folder(s), %d camera(s), %d worker(s), %d inference thread(s) of "
                 "%d onnxruntime thread(s)", session.manifest.name, session.precision, session.sha256[:12],
                 len(self.sources), len(self.cameras), len(self.workers), len(self.inference), self.plan.intra_op)

    def _offer(self, session: ModelSession) -> None:
        """A self-tested model for every inference thread; each swaps it in between two of its batches."""
        for stage in self.inference:
            stage.offer(session)

    def _build_stages(self, session: ModelSession, state: PipelineState) -> None:
        c, m = self.config, session.manifest
        self.sources = [FolderSource(config=s, jobs=self.jobs, state=state, metrics=self.metrics)
                        for s in c.sources if isinstance(s, FolderSourceConfig)]
        routes = {src.config.name: SourceRoute(src.config.after, src.config.done_dir, src.config.failed_dir, src.done)
                  for src in self.sources}
        cams = [s for s in c.sources if isinstance(s, CameraSource)]
        sinks = {cam.name: JsonlSink(c.output.dir / cam.name, cam.name, cam.rotate_bytes, cam.keep_files)
                 for cam in cams}
        # Results name the model that made them; error results, the one serving now (a reload may swap it).
        self.writer = ResultWriter(finished=self.finished, output_dir=c.output.dir, routes=routes,
                                   metrics=self.metrics, state=state, camera_sinks=sinks, mqtt=self._build_mqtt(),
                                   journal=self.journal, faults=self.faults)
        lanes = self.plan.inference_threads
        # uint8 crops: a batch being collected by each inference thread and one more waiting, one per busy
        # worker, one per camera.
        crop = m.preprocess.crop
        pool = TensorPool((lanes + 1) * c.batch.max_size + self.plan.workers + len(cams), (crop, crop, 3), np.uint8)
        self.inference = [InferenceStage(session=session, prepared=self.prepared, finished=self.finished,
                                         metrics=self.metrics, top=c.model.top_k, max_size=c.batch.max_size,
                                         max_wait_s=c.batch.max_wait_ms / 1000.0, pool=pool, state=state,
                                         name=f"inference-{i}", trims_heap=i == 0)
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
                                        metrics=self.metrics, max_pixels=c.pipeline.max_pixels) for cam in cams]

    def _build_mqtt(self) -> MqttSink | None:
        cfg, out = self.config.output.mqtt, self.config.output.dir
        if cfg is None:
            return None
        device = device_name(cfg)
        self.spool = Spool(cfg.spool_dir or out / ".mqtt-spool", cfg.spool_max_bytes, cfg.on_full)
        self.metrics.mqtt_spool_bytes.set(self.spool.disk_bytes)
        self.publisher = MqttPublisher(cfg=cfg, device=device, spool=self.spool, metrics=self.metrics,
                                       password=read_password(cfg))
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
            self.metrics.set_queue_depth(self.jobs.qsize() + self.prepared.qsize() + self.finished.qsize())
            self.metrics.set_ready(self.is_ready())
            blocked = self.writer.blocked_kind if self.writer else None
            if blocked != was_blocked:  # a blocked output shows in STATUS= at once, not at the next update
                was_blocked, next_status = blocked, 0.0
            self.metrics.set_inputs_in_flight(self.in_flight)
            alive = self.is_alive()
            if alive:
                # Only a loop that is making progress (or idle and healthy) keeps systemd's watchdog fed.
                self.notifier.watchdog()
            if alive != was_alive:  # log the change, not every tick
                if alive:
                    log.warning("inference loop healthy again")
                else:
                    log.error("inference loop unhealthy (last heartbeat %.0fs ago); systemd's watchdog is no "
                              "longer fed", max((i.heartbeat.age() for i in self.inference), default=-1))
                was_alive = alive
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                self.notifier.status(self.status_line())

    def status_line(self) -> str:
        blocked = self.writer.blocked_reason if self.writer else None
        mqtt = (f"; mqtt {'connected' if self.publisher.connected else 'offline'}, {self.spool.pending} spooled"
                if self.publisher and self.spool else "")
        return (f"{'draining' if self.draining else 'ready' if self.ready else 'starting'}; "
                f"{self.in_flight} in flight; queue {self.jobs.qsize()}" + mqtt
                + (f"; {blocked}" if blocked else ""))

    # -- shutdown -------------------------------------------------------------------------------------------
    def shutdown(self, flags: ShutdownFlags) -> bool:
        """Stop sources, drain, stop the rest; True when everything stopped within its bounds."""
        self.draining = True
        self.metrics.set_ready(False)
        self.notifier.stopping()
        self.notifier.status("draining")
        clean = True
        if self.reloader is not None:
            self.reloader.stop()  # first: no model swap while draining
            clean &= self.reloader.join(STAGE_JOIN_S + 30)  # bounded by one model load and self-test
        for src in (*self.sources, *self.cameras):
            src.stop()
        for src in (*self.sources, *self.cameras):
            clean &= src.join(STAGE_JOIN_S)
        deadline = time.monotonic() + self.config.shutdown.drain_timeout_s
        while self.in_flight > 0 and time.monotonic() < deadline and not flags.force_exit.is_set():
            time.sleep(0.05)
        if self.in_flight > 0:
            log.warning("drain ended with %d input(s) unacknowledged; they stay in place for the next start",
                        self.in_flight)
        for stage in (*self.workers, *self.inference, self.writer):
            if stage is not None:
                stage.stop()
        for stage in (*self.workers, *self.inference, self.writer):
            if stage is not None:
                clean &= stage.join(STAGE_JOIN_S)
        clean &= self._stop_mqtt(deadline)
        self.http.stop()
        clean &= self.http.join(STAGE_JOIN_S)
        self.journal.close()  # a clean exit: nothing in flight now is held against any input
        log.info("stopped%s", "" if clean else " (some stages did not stop in time)")
        return clean

    def _stop_mqtt(self, deadline: float) -> bool:
        """Everything is spooled by now: send what the drain deadline allows, then say offline and disconnect."""
        clean = True
        if self.publisher is not None:
            self.publisher.drain(deadline)
            clean = self.publisher.join(max(0.0, deadline - time.monotonic()) + STAGE_JOIN_S + CLOSE_S)
        if self.spool is not None and clean:
            self.spool.close()
        return clean

    def serve(self, flags: ShutdownFlags) -> None:
        try:
            self.startup()
            self.main_loop(flags)
        finally:
            self.shutdown(flags)
