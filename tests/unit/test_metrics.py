import time

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from edge_infer.ops.metrics import ERROR_KINDS, OUTCOMES, Metrics

CONTRACT = {
    "edge_infer_images_total": "counter",
    "edge_infer_queue_depth": "gauge",
    "edge_infer_stage_seconds": "histogram",
    "edge_infer_end_to_end_seconds": "histogram",
    "edge_infer_batch_size": "histogram",
    "edge_infer_model_info": "gauge",
    "edge_infer_camera_up": "gauge",
    "edge_infer_camera_reconnects_total": "counter",
    "edge_infer_frames_dropped_total": "counter",
    "edge_infer_last_success_timestamp_seconds": "gauge",
    "edge_infer_ready": "gauge",
    "edge_infer_errors_total": "counter",
    # Results by class (README.md "Sorting a scanner folder into 3 classes").
    "edge_infer_predictions_total": "counter",
    # The fleet sink (README.md "Fleets").
    "edge_infer_mqtt_published_total": "counter",
    "edge_infer_mqtt_acked_total": "counter",
    "edge_infer_mqtt_spooled_total": "counter",
    "edge_infer_mqtt_dropped_total": "counter",
    "edge_infer_mqtt_spool_bytes": "gauge",
    "edge_infer_mqtt_spool_full": "gauge",
    "edge_infer_mqtt_connected": "gauge",
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


def _types(registry: CollectorRegistry) -> dict[str, str]:
    text = generate_latest(registry).decode()
    return {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_every_contract_metric_is_exposed_with_its_type(metrics, registry):
    types = _types(registry)
    for name, kind in CONTRACT.items():
        assert types.get(name) == kind, name


def test_two_instances_on_two_registries_do_not_conflict():
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    m1, m2 = Metrics(r1), Metrics(r2)
    m1.count("drops", "ok")
    m1.count("drops", "ok")
    m2.count("drops", "ok")
    assert r1.get_sample_value("edge_infer_images_total", {"source": "drops", "outcome": "ok"}) == 2
    assert r2.get_sample_value("edge_infer_images_total", {"source": "drops", "outcome": "ok"}) == 1


def test_nothing_lands_on_the_global_registry(metrics):
    metrics.set_queue_depth(3)
    assert REGISTRY.get_sample_value("edge_infer_queue_depth") is None


def test_init_source_creates_zero_series_for_a_folder(metrics, registry):
    metrics.init_source("drops", "folder")
    for outcome in OUTCOMES:
        assert registry.get_sample_value("edge_infer_images_total", {"source": "drops", "outcome": outcome}) == 0
    for kind in ERROR_KINDS:
        assert registry.get_sample_value("edge_infer_errors_total", {"source": "drops", "kind": kind}) == 0
    assert registry.get_sample_value("edge_infer_last_success_timestamp_seconds", {"source": "drops"}) == 0
    assert registry.get_sample_value("edge_infer_camera_up", {"source": "drops"}) is None
    assert registry.get_sample_value("edge_infer_camera_reconnects_total", {"source": "drops"}) is None


def test_init_source_creates_camera_series_for_a_camera(metrics, registry):
    metrics.init_source("cam0", "camera")
    assert registry.get_sample_value("edge_infer_camera_up", {"source": "cam0"}) == 0
    assert registry.get_sample_value("edge_infer_camera_reconnects_total", {"source": "cam0"}) == 0
    metrics.set_camera_up("cam0", True)
    metrics.camera_reconnected("cam0")
    assert registry.get_sample_value("edge_infer_frames_dropped_total",
                                     {"source": "cam0", "reason": "pipeline_full"}) == 0
    assert registry.get_sample_value("edge_infer_camera_frozen", {"source": "cam0"}) == 0
    metrics.frame_dropped("cam0", "pipeline_full")
    assert registry.get_sample_value("edge_infer_camera_up", {"source": "cam0"}) == 1
    assert registry.get_sample_value("edge_infer_camera_reconnects_total", {"source": "cam0"}) == 1
    assert registry.get_sample_value("edge_infer_frames_dropped_total",
                                     {"source": "cam0", "reason": "pipeline_full"}) == 1
    with pytest.raises(ValueError):
        metrics.frame_dropped("cam0", "some_url_or_file_name")  # labels stay a bounded set


def test_count_ok_sets_last_success_and_failed_counts_the_error_kind(metrics, registry):
    before = time.time()
    metrics.count("drops", "ok")
    stamp = registry.get_sample_value("edge_infer_last_success_timestamp_seconds", {"source": "drops"})
    assert before <= stamp <= time.time()
    metrics.count("drops", "failed", kind="decode")
    metrics.count("drops", "failed", kind="made_up_kind")
    metrics.count("drops", "duplicate")
    assert registry.get_sample_value("edge_infer_images_total", {"source": "drops", "outcome": "failed"}) == 2
    assert registry.get_sample_value("edge_infer_images_total", {"source": "drops", "outcome": "duplicate"}) == 1
    assert registry.get_sample_value("edge_infer_errors_total", {"source": "drops", "kind": "decode"}) == 1
    # Unknown kinds must not create unbounded label values.
    assert registry.get_sample_value("edge_infer_errors_total", {"source": "drops", "kind": "made_up_kind"}) is None
    assert registry.get_sample_value("edge_infer_errors_total", {"source": "drops", "kind": "other"}) == 1


def test_unknown_outcome_or_stage_is_rejected(metrics):
    with pytest.raises(ValueError):
        metrics.count("drops", "maybe")
    with pytest.raises(ValueError):
        metrics.observe_stage("postprocess", 0.1)


def test_stage_histogram_resolves_half_a_millisecond(metrics, registry):
    metrics.observe_stage("queue", 0.0004)
    metrics.observe_stage("queue", 7.0)
    assert registry.get_sample_value("edge_infer_stage_seconds_bucket", {"stage": "queue", "le": "0.0005"}) == 1
    assert registry.get_sample_value("edge_infer_stage_seconds_bucket", {"stage": "queue", "le": "10.0"}) == 2
    assert registry.get_sample_value("edge_infer_stage_seconds_count", {"stage": "queue"}) == 2


def test_end_to_end_and_batch_histograms(metrics, registry):
    metrics.observe_end_to_end("drops", 45.0)
    metrics.observe_batch(8)
    metrics.observe_batch(3)
    assert registry.get_sample_value("edge_infer_end_to_end_seconds_bucket", {"source": "drops", "le": "30.0"}) == 0
    assert registry.get_sample_value("edge_infer_end_to_end_seconds_bucket", {"source": "drops", "le": "60.0"}) == 1
    assert registry.get_sample_value("edge_infer_batch_size_bucket", {"le": "2.0"}) == 0
    assert registry.get_sample_value("edge_infer_batch_size_bucket", {"le": "4.0"}) == 1
    assert registry.get_sample_value("edge_infer_batch_size_bucket", {"le": "8.0"}) == 2
    assert registry.get_sample_value("edge_infer_batch_size_bucket", {"le": "256.0"}) == 2


def test_set_model_replaces_the_previous_labelset(metrics, registry):
    metrics.set_model("mobilenet_v2", "aaa", "int8")
    metrics.set_model("mobilenet_v2", "bbb", "fp32", "v2")
    old = {"name": "mobilenet_v2", "sha256": "aaa", "precision": "int8", "version": ""}
    new = {"name": "mobilenet_v2", "sha256": "bbb", "precision": "fp32", "version": "v2"}
    assert registry.get_sample_value("edge_infer_model_info", old) is None
    assert registry.get_sample_value("edge_infer_model_info", new) == 1


def test_ready_and_queue_depth_gauges(metrics, registry):
    assert registry.get_sample_value("edge_infer_ready") == 0
    metrics.set_ready(True)
    metrics.set_queue_depth(5)
    assert registry.get_sample_value("edge_infer_ready") == 1
    assert registry.get_sample_value("edge_infer_queue_depth") == 5


def test_process_metrics_are_on_the_registry(metrics, registry):
    assert registry.get_sample_value("process_cpu_seconds_total") is not None
    assert registry.get_sample_value("process_resident_memory_bytes") > 0
    assert "python_info" in _types(registry)


def test_a_failure_stamps_the_last_error_of_its_kind_and_nothing_else_does(metrics, registry):
    metrics.init_source("drops", "folder")
    metrics.count("drops", "ok")
    assert registry.get_sample_value("edge_infer_last_error_timestamp_seconds",
                                     {"source": "drops", "kind": "decode"}) is None  # no error yet: no series
    before = time.time()
    metrics.count("drops", "failed", kind="decode")
    metrics.count("drops", "failed", kind="a/file/name.jpg")
    stamp = registry.get_sample_value("edge_infer_last_error_timestamp_seconds", {"source": "drops", "kind": "decode"})
    assert before <= stamp <= time.time()
    assert registry.get_sample_value("edge_infer_last_error_timestamp_seconds",
                                     {"source": "drops", "kind": "other"}) >= stamp
    assert registry.get_sample_value("edge_infer_last_error_timestamp_seconds",
                                     {"source": "drops", "kind": "a/file/name.jpg"}) is None


def test_in_flight_and_memory_limit_gauges(metrics, registry):
    metrics.set_inputs_in_flight(3)
    metrics.set_memory_limit(512 * 2**20)
    assert registry.get_sample_value("edge_infer_inputs_in_flight") == 3
    assert registry.get_sample_value("edge_infer_memory_limit_bytes") == 512 * 2**20


def test_labelled_histograms_exist_at_zero_before_the_first_observation(metrics, registry):
    # rate() needs a sample before the first observation, or the first inputs are not counted at all.
    for stage in ("queue", "preprocess", "inference", "write"):
        assert registry.get_sample_value("edge_infer_stage_seconds_count", {"stage": stage}) == 0
    metrics.init_source("drops", "folder")
    assert registry.get_sample_value("edge_infer_end_to_end_seconds_count", {"source": "drops"}) == 0
