"""The daemon's lifecycle: starts the stages in order, supervises them, and shuts down in order.

``wiring/stages.py`` builds the stages. Start order: HTTP (/readyz 503 during warm-up), model,
writer, inference, workers, then the sources; READY=1 once all are armed. Each is registered with
one ``Supervisor`` as it starts. Stop order: sources first, drain what is in flight (within
``shutdown.drain_timeout_s``), downstream-last, HTTP last, every join bounded by one deadline.
"""
from __future__ import annotations

import logging
import os
import queue
import time

from prometheus_client import CollectorRegistry

from .classifier.reload import ModelReloader
from .classifier.session import ModelSession, SessionOptions
from .commit.inflight import JOURNAL_NAME, InflightJournal
from .commit.parked import PARKED_NAME, ParkedInputs
from .config import AppConfig
from .lifecycle import ShutdownFlags, Stage
from .ops.faults import Faults
from .ops.memory import heap_trimmer, memory_limit_bytes
from .ops.metrics import Metrics
from .ops.preflight import check_supported
from .ops.supervisor import SHUTDOWN_MARGIN_S, Deadline, Probe, Supervisor
from .ops.systemd import Notifier
from .ops.web import HttpServer
from .pipeline.context import StageContext
from .pipeline.jobs import CameraFrame, FolderInput, Job, Ticket
from .pipeline.plan import plan_threads
from .pipeline.state import PipelineState
from .sinks.durable import make_dirs
from .sinks.mqtt_publisher import CLOSE_S
from .sources.inbox_lock import InboxLocks
from .wiring.stages import StageBuilder, Stages

log = logging.getLogger(__name__)
HANG_TIMEOUT_S = 30.0  # a stage loop silent this long is hung: /healthz fails, WATCHDOG=1 stops
STATUS_EVERY_S = 10.0


class App:
    """One daemon instance. Everything it owns is created here or in ``wiring`` and passed down;
    nothing is global."""

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
        self.jobs: queue.Queue[FolderInput] = queue.Queue(maxsize=p.queue_size)
        # Bounded by the tensor pool: at most pool.count prepared images exist at once.
        self.prepared: queue.Queue[Job | Ticket] = queue.Queue()
        # Folder inputs, one by one or a batch in a list:
        self.finished: queue.Queue[FolderInput | list[FolderInput]] = queue.Queue(
            maxsize=p.queue_size)
        # Camera frames, inferred, for the regions stage.
        self.frames: queue.Queue[list[CameraFrame]] = queue.Queue(maxsize=p.queue_size)
        m = config.metrics
        self.http = HttpServer(host=m.host, port=m.port, registry=self.registry,
                               is_alive=self.is_alive, is_ready=self.is_ready,
                               refused=self.metrics.http_refused_total, web_config=m.web_config,
                               max_connections=m.max_connections,
                               request_timeout_s=m.request_timeout_s)
        self.stages = Stages()  # built once the model is loaded
        self.reloader: ModelReloader | None = None
        self.journal = InflightJournal(config.output.dir / JOURNAL_NAME)
        self.parked = ParkedInputs(config.output.dir / PARKED_NAME, self.metrics)
        self.supervisor = Supervisor(on_restart=self.metrics.stage_restarted,
                                     give_back=self._give_back, fault_for=faults.stage_fault)
        self.abandoned: list[str] = []  # stages shutdown gave up on (cli exits 1)

    @property
    def in_flight(self) -> int:
        """Inputs taken from the sources and not yet acknowledged."""
        return self.state.in_flight.value if self.state is not None else 0

    # -- health -----------------------------------------------------------------------------------
    def is_alive(self) -> bool:
        """Every stage runs (or is being restarted within its intensity) and none is hung."""
        return self.supervisor.healthy()

    def is_ready(self) -> bool:
        # A blocked output (disk full, read-only, ...) takes no new inputs: not ready, yet alive,
        # since a restart would not help and the writer resumes by itself.
        writer = self.stages.writer
        blocked = writer is not None and writer.blocked_kind is not None
        return self.ready and not self.draining and not blocked and self.is_alive()

    # -- startup ----------------------------------------------------------------------------------
    def startup(self) -> None:
        c, st = self.config, self.stages
        self.http.start()
        # Not restarted in place: its port would have to be bound again; a dead server fails the
        # probes anyway.
        http = self.http
        self.supervisor.watch(Probe(
            "http", "http", http.alive, stopping=lambda: self.draining,
            inject=lambda: http._server.socket.close()))  # type: ignore[union-attr]
        log.info("metrics and health on http://%s:%d/", c.metrics.host, self.http.port)
        self.notifier.status("loading model")
        options = SessionOptions(intra_op_threads=self.plan.intra_op)
        session = ModelSession.load(c.model.path, options)
        session.warm_up(c.batch.max_size)
        # Loading frees what graph optimisation and prepacking copied (4 MB here); glibc keeps it.
        heap_trimmer()()
        self.metrics.set_model(session.manifest.name, session.sha256, session.precision,
                               session.manifest.version)
        self.metrics.set_labels(session.manifest.labels)
        limit = memory_limit_bytes()
        if limit is not None:
            self.metrics.set_memory_limit(limit)
        make_dirs(c.output.dir)  # durably: a power cut must not take back the results' folder
        self.journal.open()
        self.parked.load()
        self.state = PipelineState(jobs=self.jobs, serving=session)
        ctx = StageContext(jobs=self.jobs, prepared=self.prepared, finished=self.finished,
                           frames=self.frames, metrics=self.metrics, journal=self.journal,
                           parked=self.parked, faults=self.faults)
        StageBuilder(c, self.plan, ctx).build(st, session, self.state)
        self.notifier.status("starting decoders")
        for worker in st.workers:
            worker.start_decoder()
        # The embedded model changes only with the package, so only a configured file is watched.
        state = self.state
        self.reloader = ModelReloader(path=session.path, options=options,
                                      warm_batch=c.batch.max_size, serving=lambda: state.serving,
                                      swap=self._offer, metrics=self.metrics,
                                      watch=c.model.path is not None)
        self._start(self.reloader)
        # The publisher first: results spooled before a restart go out while the rest warm up.
        for stage in (st.publisher, st.writer, st.regions, *st.inference, *st.workers):
            if stage is None:
                continue
            self._start(stage)
        for src in st.sources:
            self.metrics.init_source(src.config.name, "folder")
            self._start(src)
            self.supervisor.watch(Probe("observer", f"observer-{src.config.name}",
                                        src.observer_alive, src.restart_observer,
                                        src.break_observer, src.stopping))
        for cam in st.cameras:
            self._start(cam)  # armed at once; each connects in its own thread: see camera_up
        self.ready = True
        self.metrics.set_ready(True)
        # Its status in the same datagram: `systemctl status` never shows active, "loading model".
        self.notifier.notify(READY=1, STATUS=self.status_line())
        log.info("ready: model %s (%s, %s), %d folder(s), %d camera(s), %d worker(s), %d inference "
                 "thread(s) of %d onnxruntime thread(s)", session.manifest.name, session.precision,
                 session.sha256[:12], len(st.sources), len(st.cameras), len(st.workers),
                 len(st.inference), self.plan.intra_op)

    def _start(self, stage: Stage) -> None:
        # Loops that beat at least every poll_s: hung past the limit (a worker may wait 2 decodes).
        if stage.kind in ("writer", "regions", "inference", "source"):
            stage.hang_s = self.hang_timeout_s
        elif stage.kind == "preprocess":
            stage.hang_s = self.hang_timeout_s + 2 * self.config.pipeline.decode_timeout_s
        self.supervisor.watch(stage)
        stage.start()

    def _give_back(self, job: Job) -> None:
        """A job a dead stage held: its tensor back to the pool; a folder input offered again (a
        camera frame is dropped, as a busy daemon drops frames)."""
        pool = self.stages.pool
        if job.tensor is not None and pool is not None:
            pool.release(job.tensor)
            job.tensor = None
        src = next((s for s in self.stages.sources if s.config.name == job.source), None)
        if isinstance(job, FolderInput) and src is not None and src.give_back(job):
            log.warning("%s/%r was in hand of a stage that died; offered again", job.source,
                        job.rel)

    def _offer(self, session: ModelSession) -> None:
        """A self-tested model for every inference thread; each swaps it in between two of its
        batches. The metrics say so at once: an idle daemon swaps only at its next input."""
        for stage in self.stages.inference:
            stage.offer(session)
        self.metrics.set_model(session.manifest.name, session.sha256, session.precision,
                               session.manifest.version)
        self.metrics.set_labels(session.manifest.labels)

    # -- main loop --------------------------------------------------------------------------------
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
            depth = (self.jobs.qsize() + self.prepared.qsize() + self.finished.qsize()
                     + self.frames.qsize())
            self.metrics.set_queue_depth(depth)
            self.metrics.set_ready(self.is_ready())
            blocked = self.stages.writer.blocked_kind if self.stages.writer else None
            if blocked != was_blocked:  # a blocked output shows in STATUS= at once
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
        st = self.stages
        blocked = st.writer.blocked_reason if st.writer else None
        mqtt = (f"; mqtt {'connected' if st.publisher.connected else 'offline'}, "
                f"{st.spool.pending} spooled" if st.publisher and st.spool else "")
        problems = self.supervisor.problems()
        return (f"{'draining' if self.draining else 'ready' if self.ready else 'starting'}; "
                f"{self.in_flight} in flight; queue {self.jobs.qsize()}" + mqtt
                + (f"; {blocked}" if blocked else "")
                + (f"; unhealthy: {', '.join(problems)}" if problems else ""))

    # -- shutdown ---------------------------------------------------------------------------------
    def shutdown(self, flags: ShutdownFlags) -> bool:
        """Stop sources, drain, stop the rest, all within one deadline (a second signal cuts it to
        a second); True when every stage stopped in time, else ``abandoned`` names the others."""
        st = self.stages
        drain_s = self.config.shutdown.drain_timeout_s
        deadline = Deadline(drain_s + SHUTDOWN_MARGIN_S, flags.force_exit)
        drain = Deadline(drain_s, flags.force_exit)
        self.draining = True
        self.metrics.set_ready(False)
        self.notifier.stopping()
        self.notifier.status("draining")
        if self.reloader is not None:  # first: no swap while draining (joined last: it may load)
            self.reloader.stop()
        self._join_all(deadline, (*st.sources, *st.cameras))
        while self.in_flight > 0 and drain.left() > 0 and not flags.force_exit.is_set():
            # a stage dying mid-drain is restarted (and gives its inputs back) too
            self.supervisor.check()
            time.sleep(0.05)
        if self.in_flight > 0:
            log.warning("drain ended with %d input(s) unacknowledged; they stay in place for the "
                        "next start", self.in_flight)
        self._join_all(deadline, (*st.workers, *st.inference, st.writer, st.regions))
        if st.publisher is not None:
            # Everything is spooled by now: send what the drain allows, say offline, disconnect.
            st.publisher.drain(time.monotonic()
                               + min(drain.left(), max(0.0, deadline.left() - CLOSE_S)))
            self._join_all(deadline, (st.publisher,))
        if st.spool is not None and "mqtt" not in self.abandoned:
            st.spool.close()
        self.http.stop()
        self._join_all(deadline, (self.http, self.reloader))
        self.journal.close()  # a clean exit: nothing in flight now is held against any input
        if self.abandoned:
            log.error("stopped, abandoning stage(s) that did not stop within the shutdown "
                      "deadline: %s", ", ".join(self.abandoned))
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
