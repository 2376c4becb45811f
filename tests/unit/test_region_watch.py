"""The writer's side of camera regions: frames in order, changes published once, unknown when the camera is down."""
from __future__ import annotations

from prometheus_client import CollectorRegistry

from edge_infer.config import CameraSourceConfig, RegionConfig
from edge_infer.ops.metrics import Metrics
from edge_infer.pipeline.jobs import CameraFrame
from edge_infer.regions.watcher import RegionWatch


class Sink:
    def __init__(self) -> None:
        self.lines: list[dict] = []

    def append(self, obj: dict) -> None:
        self.lines.append(obj)


def frame(seq: int, label: str, score: float = 0.9) -> CameraFrame:
    job = CameraFrame(source="cam", rel=f"cam/door#{seq}", region="door")
    job.frame = {"timestamp": "t", "seq": seq}
    job.predictions = [{"index": 0, "label": label, "score": score}]
    return job


def watch(clock: list[float]) -> tuple[RegionWatch, Sink, CollectorRegistry]:
    door = RegionConfig(name="door", confirm_frames=2, states=("open", "shut"))
    cam = CameraSourceConfig(name="cam", url="rtsp://x/y", stall_after_s=5, regions=(door,))
    registry, sink = CollectorRegistry(), Sink()
    w = RegionWatch(camera=cam, sink=sink, mqtt=None, metrics=Metrics(registry), last_frame=lambda: clock[0])
    w.start()
    return w, sink, registry


def state(registry: CollectorRegistry, s: str) -> float | None:
    return registry.get_sample_value("edge_infer_region_state", {"source": "cam", "region": "door", "state": s})


def test_frames_finished_out_of_order_never_replay_the_past():
    w, sink, registry = watch([0.0])
    for job in (frame(1, "open"), frame(2, "open"), frame(4, "shut"), frame(3, "shut"), frame(5, "open")):
        w.observe(job)
    # 3 arrived after 4 and is ignored: 4 and 5 disagree, so no second change.
    assert [(e["previous"], e["state"]) for e in sink.lines] == [("unknown", "open")]
    assert state(registry, "open") == 1 and state(registry, "shut") == 0 and state(registry, "unknown") == 0


def test_a_camera_down_for_stall_after_s_makes_the_region_unknown_once():
    clock = [100.0]
    w, sink, registry = watch(clock)
    w.observe(frame(1, "open"))
    w.observe(frame(2, "open"))
    w.tick(104.9)
    assert len(sink.lines) == 1
    w.tick(105.0)
    w.tick(200.0)
    assert [(e["previous"], e["state"], e["score"]) for e in sink.lines][1:] == [("open", "unknown", None)]
    assert state(registry, "unknown") == 1 and state(registry, "open") == 0
    changes = registry.get_sample_value("edge_infer_region_state_changes_total", {"source": "cam", "region": "door"})
    assert changes == 1


def test_a_restarted_writer_keeps_the_states_it_had():
    w, _, registry = watch([0.0])
    w.observe(frame(1, "shut"))
    w.observe(frame(2, "shut"))
    w.start()  # the writer's run() again, after it died
    assert state(registry, "shut") == 1 and state(registry, "unknown") == 0 and w.states["door"].state == "shut"
