"""The daemon's Prometheus metrics, all on one registry that the app creates and passes in.

Nothing here touches prometheus_client's global default registry, so tests (and several apps in one
process) can each build their own ``Metrics`` without "Duplicated timeseries" errors.
"""
from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector

from .folder_metrics import FolderMetrics

log = logging.getLogger(__name__)

# superseded: a newer frame replaced one still waiting for the batcher (drop oldest); pipeline_full: no free
# tensor for a sampled frame (the daemon is busy); decode: a frame that would not convert.
FRAME_DROP_REASONS = ("superseded", "pipeline_full", "decode")
OUTCOMES = ("ok", "failed", "duplicate")
RELOAD_OUTCOMES = ("ok", "failed")
STAGES = ("queue", "preprocess", "inference", "write")
# Why the writer cannot commit results: the disk is full, the folder is read-only (or not ours), a folder
# is missing and cannot be made, another I/O error, the MQTT spool is full (on_full: block), or the process
# is short of descriptors or memory for now (EMFILE, ENFILE, ENOMEM, EAGAIN).
BLOCKED_REASONS = ("enospc", "readonly", "missing", "io", "spool_full", "resources")
# Error kinds are label values, so they must stay a small fixed set; anything else is counted as "other".
ERROR_KINDS = ("decode", "too_large", "unsupported", "io", "crashed", "timeout", "internal", "other")
# Why a decoder process was replaced: it died on an input (crashed) or overran pipeline.decode_timeout_s.
DECODER_RESTART_REASONS = ("crashed", "timeout")
# Why the HTTP port turned a connection away: over metrics.max_connections, too slow to send its request,
# no or wrong credentials, a failed TLS handshake, a web config that no longer reads.
HTTP_REFUSED_REASONS = ("busy", "timeout", "unauthorized", "tls", "config")
STAGE_KINDS = ("source", "observer", "camera", "preprocess", "inference", "writer", "regions",
               "publisher", "reloader", "http")  # supervised: a label value per kind, however many run

# Stages run from sub-millisecond (queue hand-off) to seconds (a slow disk or a cold model on a Pi).
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
END_TO_END_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_LABEL_CLASSES = 100  # metrics.max_label_classes' default


class Metrics:
    """Every metric of the contract, registered on ``registry`` (never the global default one).

    Label values must come from bounded sets: source names from the config, the constants above, and
    fixed reason strings; never a file name or URL.
    """

    def __init__(self, registry: CollectorRegistry, max_label_classes: int = MAX_LABEL_CLASSES) -> None:
        self.registry = registry
        self.max_label_classes = max_label_classes
        # The serving model's labels while it has few enough to count by (else empty): only these are label
        # values, so the series stay bounded by the manifest, and a label of a swapped-out model is not counted.
        self._counted_labels: frozenset[str] = frozenset()
        self._labels: tuple[str, ...] | None = None
        self._sources: list[str] = []
        # prometheus_client appends "_total" to counters itself; passing the bare name keeps it exact.
        self.images_total = Counter("edge_infer_images", "Inputs finished, by outcome.",
                                    ["source", "outcome"], registry=registry)
        self.queue_depth = Gauge("edge_infer_queue_depth", "Inputs waiting for inference.", registry=registry)
        # The queues alone miss an input stuck in a worker or the writer; the "no results while inputs
        # wait" alert needs both.
        self.inputs_in_flight = Gauge("edge_infer_inputs_in_flight", "Folder inputs taken from their source "
                                      "and not yet acknowledged.", registry=registry)
        self.stage_seconds = Histogram("edge_infer_stage_seconds", "Time spent per pipeline stage.",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.end_to_end_seconds = Histogram("edge_infer_end_to_end_seconds",
                                            "From input seen to result written.", ["source"],
                                            buckets=END_TO_END_BUCKETS, registry=registry)
        self.batch_size = Histogram("edge_infer_batch_size", "Inputs per inference batch.",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.predictions_total = Counter("edge_infer_predictions", "Ok results by their top-1 label, for models "
                                         "with at most metrics.max_label_classes classes.", ["source", "label"],
                                         registry=registry)
        self.model_info = Gauge("edge_infer_model_info", "The loaded model (always 1).",
                                ["name", "sha256", "precision", "version"], registry=registry)
        self.camera_up = Gauge("edge_infer_camera_up", "1 while the camera stream delivers frames.",
                               ["source"], registry=registry)
        self.camera_reconnects_total = Counter("edge_infer_camera_reconnects", "Camera reconnect attempts.",
                                               ["source"], registry=registry)
        self.camera_frozen = Gauge("edge_infer_camera_frozen", "1 while the camera sends identical frames.",
                                   ["source"], registry=registry)
        self.camera_stalls_total = Counter("edge_infer_camera_stalls", "Times a camera sent no frame for "
                                           "stall_after_s and was reopened.", ["source"], registry=registry)
        self.frames_dropped_total = Counter("edge_infer_frames_dropped", "Camera frames not classified.",
                                            ["source", "reason"], registry=registry)
        self.last_success_timestamp_seconds = Gauge("edge_infer_last_success_timestamp_seconds",
                                                    "Unix time of the last ok result.", ["source"],
                                                    registry=registry)
        self.region_state = Gauge("edge_infer_region_state", "1 for a camera region's current state.",
                                  ["source", "region", "state"], registry=registry)
        self.region_state_changes_total = Counter("edge_infer_region_state_changes", "Confirmed changes of a "
                                                  "camera region's state.", ["source", "region"], registry=registry)
        self.ready = Gauge("edge_infer_ready", "1 when /readyz answers 200.", registry=registry)
        self.errors_total = Counter("edge_infer_errors", "Failed inputs, by error kind.",
                                    ["source", "kind"], registry=registry)
        self.model_reloads_total = Counter("edge_infer_model_reloads", "Model reloads (SIGHUP or a changed "
                                           "model file), by outcome: ok = swapped in, failed = refused.",
                                           ["outcome"], registry=registry)
        for outcome in RELOAD_OUTCOMES:
            self.model_reloads_total.labels(outcome)
        self.folders = FolderMetrics(registry)  # what the folder sources see of their file systems
        self.output_blocked = Gauge("edge_infer_output_blocked", "1 while results cannot be written, by reason; "
                                    "inputs wait meanwhile.", ["reason"], registry=registry)
        for reason in BLOCKED_REASONS:
            self.output_blocked.labels(reason)
        self.inputs_parked = Gauge("edge_infer_inputs_parked", "Folder inputs with their record that cannot be "
                                   "moved out of the inbox (see <output.dir>/.parked.json).", ["source"],
                                   registry=registry)
        # Not created at 0 like the others: a series exists only once that kind of failure happened.
        self.last_error_timestamp_seconds = Gauge("edge_infer_last_error_timestamp_seconds",
                                                  "Unix time of the last failed input, by error kind.",
                                                  ["source", "kind"], registry=registry)
        self.memory_limit_bytes = Gauge("edge_infer_memory_limit_bytes", "The memory the process may use: "
                                        "its cgroup's limit, or the machine's memory.", registry=registry)
        for stage in STAGES:  # at 0 from the start, so rate() counts the first observations too
            self.stage_seconds.labels(stage)
        # The fleet sink (output.mqtt); no labels: one broker connection and one spool per daemon.
        self.mqtt_published_total = Counter("edge_infer_mqtt_published", "MQTT results sent to the broker "
                                            "(resends after a reconnect included).", registry=registry)
        self.mqtt_acked_total = Counter("edge_infer_mqtt_acked", "MQTT results the broker acknowledged.",
                                        registry=registry)
        self.mqtt_spooled_total = Counter("edge_infer_mqtt_spooled", "Results added to the MQTT spool.",
                                          registry=registry)
        self.mqtt_dropped_total = Counter("edge_infer_mqtt_dropped", "Results never to be published: evicted "
                                          "from a full spool (on_full: drop_oldest), or camera frames refused by "
                                          "a full spool.", registry=registry)
        self.mqtt_spool_corrupt_total = Counter("edge_infer_mqtt_spool_corrupt_records", "MQTT spool records "
                                                "found damaged at start-up and skipped (never sent).",
                                                registry=registry)
        self.mqtt_spool_bytes = Gauge("edge_infer_mqtt_spool_bytes", "Bytes of the MQTT spool on disk.",
                                      registry=registry)
        self.mqtt_spool_full = Gauge("edge_infer_mqtt_spool_full", "1 while the MQTT spool is full and holds "
                                     "folder inputs back (on_full: block).", registry=registry)
        self.mqtt_connected = Gauge("edge_infer_mqtt_connected", "1 while connected to the MQTT broker.",
                                    registry=registry)
        self.decoder_restarts_total = Counter("edge_infer_decoder_restarts", "Decoder processes replaced after "
                                              "one died on an input or overran pipeline.decode_timeout_s.",
                                              ["reason"], registry=registry)
        for reason in DECODER_RESTART_REASONS:
            self.decoder_restarts_total.labels(reason)
        self.http_refused_total = Counter("edge_infer_http_refused", "HTTP connections or requests turned away, "
                                          "by reason.", ["reason"], registry=registry)
        for reason in HTTP_REFUSED_REASONS:
            self.http_refused_total.labels(reason)
        self.stage_restarts_total = Counter("edge_infer_stage_restarts", "Stages restarted in place after "
                                            "they died, by stage kind.", ["stage"], registry=registry)
        for kind in STAGE_KINDS:
            self.stage_restarts_total.labels(kind)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        # Two concurrent set_model calls must not leave two labelsets behind.
        self._model_lock = threading.Lock()

    def init_source(self, name: str, kind: str) -> None:
        """Create the source's series at 0 so dashboards and rate() see them before the first input."""
        for outcome in OUTCOMES:
            self.images_total.labels(name, outcome)
        for error_kind in ERROR_KINDS:
            self.errors_total.labels(name, error_kind)
        self.last_success_timestamp_seconds.labels(name)
        if kind == "folder":
            self.folders.init_source(name)
            self.inputs_parked.labels(name)
        self.end_to_end_seconds.labels(name)
        with self._model_lock:
            if name not in self._sources:  # a camera inits its series again as it restarts
                self._sources.append(name)
            for label in self._counted_labels:
                self.predictions_total.labels(name, label)
        if kind == "camera":
            self.camera_up.labels(name)
            self.camera_reconnects_total.labels(name)
            self.camera_frozen.labels(name)
            self.camera_stalls_total.labels(name)
            for reason in FRAME_DROP_REASONS:
                self.frames_dropped_total.labels(name, reason)

    def decoder_restarted(self, reason: str) -> None:
        self.decoder_restarts_total.labels(reason if reason in DECODER_RESTART_REASONS else "crashed").inc()

    def stage_restarted(self, kind: str) -> None:
        self.stage_restarts_total.labels(kind).inc()  # kinds are class constants: a bounded set

    def set_model(self, name: str, sha256: str, precision: str, version: str = "") -> None:
        """Expose the loaded model; a reload replaces the old labelset instead of adding a second one."""
        with self._model_lock:
            self.model_info.clear()
            self.model_info.labels(name, sha256, precision, version).set(1)

    def set_labels(self, labels: tuple[str, ...]) -> None:
        """Count predictions by the serving model's labels from now on; the series of labels the new model
        does not have are removed (their history stays in Prometheus), those it shares go on counting."""
        with self._model_lock:
            if labels == self._labels:
                return  # every inference thread swapping in the same model says so
            self._labels = labels
            if len(labels) > self.max_label_classes:
                new: frozenset[str] = frozenset()
                log.info("edge_infer_predictions_total is not exported for this model: it has %d classes, more than "
                         "metrics.max_label_classes (%d)", len(labels), self.max_label_classes)
            else:
                new = frozenset(labels)
            for label in self._counted_labels - new:
                for source in self._sources:
                    self.predictions_total.remove(source, label)
            for label in new - self._counted_labels:
                for source in self._sources:
                    self.predictions_total.labels(source, label)
            self._counted_labels = new

    def predicted(self, source: str, label: str) -> None:
        """One ok result whose top-1 label is ``label`` (not counted unless the serving model has it)."""
        with self._model_lock:  # not between set_labels' removal and its new set: no removed series comes back
            if label in self._counted_labels:
                self.predictions_total.labels(source, label).inc()

    def model_reloaded(self, outcome: str) -> None:
        if outcome not in RELOAD_OUTCOMES:
            raise ValueError(f"outcome must be one of {RELOAD_OUTCOMES}, not {outcome!r}")
        self.model_reloads_total.labels(outcome).inc()

    def count(self, source: str, outcome: str, kind: str | None = None) -> None:
        """One finished input; ``kind`` (for failures) also counts ``edge_infer_errors_total``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        self.images_total.labels(source, outcome).inc()
        if outcome == "ok":
            self.last_success_timestamp_seconds.labels(source).set(time.time())
        elif outcome == "failed" and kind is not None:
            kind = kind if kind in ERROR_KINDS else "other"
            self.errors_total.labels(source, kind).inc()
            self.last_error_timestamp_seconds.labels(source, kind).set(time.time())

    def observe_stage(self, stage: str, seconds: float) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        self.stage_seconds.labels(stage).observe(seconds)

    def observe_end_to_end(self, source: str, seconds: float) -> None:
        self.end_to_end_seconds.labels(source).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def set_inputs_in_flight(self, n: int) -> None:
        self.inputs_in_flight.set(n)

    def set_memory_limit(self, limit_bytes: int) -> None:
        self.memory_limit_bytes.set(limit_bytes)

    def set_ready(self, ready: bool) -> None:
        self.ready.set(1 if ready else 0)

    def watch_overflowed(self, source: str) -> None:
        self.folders.watch_overflows_total.labels(source).inc()

    def set_output_blocked(self, reason: str | None) -> None:
        """``reason`` (one of BLOCKED_REASONS) while the writer is blocked, None once it writes again."""
        if reason is not None and reason not in BLOCKED_REASONS:
            raise ValueError(f"reason must be one of {BLOCKED_REASONS}, not {reason!r}")
        for r in BLOCKED_REASONS:
            self.output_blocked.labels(r).set(1 if r == reason else 0)

    def set_parked(self, source: str, n: int) -> None:
        self.inputs_parked.labels(source).set(n)

    def set_camera_up(self, source: str, up: bool) -> None:
        self.camera_up.labels(source).set(1 if up else 0)

    def init_region(self, source: str, region: str, states: tuple[str, ...]) -> None:
        """Every declared state at 0, ``unknown`` at 1, and the change counter at 0."""
        for state in states:
            self.region_state.labels(source, region, state).set(0)
        self.region_state.labels(source, region, "unknown").set(1)
        self.region_state_changes_total.labels(source, region)

    def region_changed(self, source: str, region: str, state: str, previous: str, declared: bool) -> None:
        # The previous state at 0 if declared, else removed (1000 classes would leave 1000 series behind).
        if declared or previous == "unknown":
            self.region_state.labels(source, region, previous).set(0)
        else:  # set to 1 by the change to it
            self.region_state.remove(source, region, previous)
        self.region_state.labels(source, region, state).set(1)
        if state != "unknown":
            self.region_state_changes_total.labels(source, region).inc()

    def camera_reconnected(self, source: str) -> None:
        self.camera_reconnects_total.labels(source).inc()

    def frame_dropped(self, source: str, reason: str) -> None:
        if reason not in FRAME_DROP_REASONS:
            raise ValueError(f"reason must be one of {FRAME_DROP_REASONS}, not {reason!r}")
        self.frames_dropped_total.labels(source, reason).inc()
