"""Camera regions end to end: real video files and a real RTSP server made from real photos, the daemon's own
model, and (with MQTT) a real Mosquitto subscriber.

The frames are 640x480 with two photos side by side in the top half: the left one switches between two
scenes, held for seconds each, with single frames of the other scene spliced in; the right one never
changes. ``door`` watches the left (a pixel crop), ``bins`` the right (a fraction crop).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.support.daemon import RunningApp, jsonl_rows, wait_for, write_config
from tests.support.paths import SAMPLES

pytestmark = pytest.mark.usefixtures("pyav")
A, B, STILL = "n01440764_tench.JPEG", "n01558993_robin.JPEG", "n01601694_water_ouzel.JPEG"
LABELS = {A: "tench", B: "robin", STILL: "water ouzel"}
FPS = 10
REGIONS = [{"name": "door", "crop": [0, 0, 320, 240]}, {"name": "bins", "crop": [0.5, 0, 1, 0.5]}]


def frame_of(left: str):
    from PIL import Image

    frame = Image.new("RGB", (640, 480), (0, 0, 0))
    frame.paste(Image.open(SAMPLES / left).convert("RGB").resize((320, 240)), (0, 0))
    frame.paste(Image.open(SAMPLES / STILL).convert("RGB").resize((320, 240)), (320, 0))
    return frame


def write_video(path: Path, script: list[tuple[str, int]]) -> None:
    """``script``: (left photo, frames) in order, at FPS frames a second."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuvj420p"
        stream.bit_rate = 40_000_000  # FFmpeg's default (200 kb/s) blurs a held picture more with every frame
        for photo, n in script:
            picture = av.VideoFrame.from_image(frame_of(photo))
            for _ in range(n):
                for packet in stream.encode(picture):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def events(root: Path, source: str, region: str) -> list[dict]:
    return [e for e in jsonl_rows(root, source) if "state" in e and e["region"] == region]


def camera(url: str, **kw) -> dict:
    return {"name": "cam", "type": "camera", "url": url, "fps": FPS, "loop": False, "stall_after_s": 2,
            "open_timeout_s": 3, "read_timeout_s": 2, "reconnect_min_s": 0.2, "reconnect_max_s": 1,
            "regions": REGIONS, **kw}


# Scene A 3 s with a single frame of B spliced in, B 3 s with a single frame of A, A 3 s: two switches.
SCRIPT = [(A, 14), (B, 1), (A, 15), (B, 12), (A, 1), (B, 17), (A, 30)]
SWITCHES_S = [3.0, 6.0]  # media time of the first frame of each new scene


def test_a_region_confirms_one_change_per_switch_and_none_for_spliced_frames(tmp_path, shared):
    write_video(tmp_path / "clip.avi", SCRIPT)
    samples = tmp_path / "samples"
    cfg = write_config(tmp_path, [camera("clip.avi", samples_dir="samples", samples_max_files=4)])
    with RunningApp(cfg) as run:
        wait_for(lambda: run.sample("edge_infer_camera_up", source="cam") == 1, 20, "playing")
        wait_for(lambda: run.sample("edge_infer_camera_up", source="cam") == 0, 30, "the file ended")
        # Down for stall_after_s: both regions go back to unknown.
        wait_for(lambda: len(events(tmp_path, "cam", "bins")) == 2, 10, "bins unknown again")
        wait_for(lambda: events(tmp_path, "cam", "door")[-1:] and events(tmp_path, "cam", "door")[-1]["state"] == "unknown", 10, "door unknown again")
        assert run.sample("edge_infer_region_state", source="cam", region="door", state="unknown") == 1
        assert run.sample("edge_infer_region_state_changes_total", source="cam", region="door") == 3
        assert run.sample("edge_infer_region_state_changes_total", source="cam", region="bins") == 1
    door = events(tmp_path, "cam", "door")
    assert [(e["previous"], e["state"]) for e in door] == [
        ("unknown", "tench"), ("tench", "robin"), ("robin", "tench"), ("tench", "unknown")]
    # Each change came confirm_frames (3) frames into its scene at the earliest, and well before its end.
    for e, switch in zip(door[1:3], SWITCHES_S):
        assert switch + 0.2 - 0.01 <= e["frame"]["media_time_s"] < switch + 1.5, e
        assert e["score"] >= 0.8 and e["source"] == "cam" and e["region"] == "door" and e["at"].endswith("Z")
    assert door[0]["frame"]["media_time_s"] >= 0.2 and door[3]["score"] is None and door[3]["frame"] == {}
    bins = events(tmp_path, "cam", "bins")
    assert [(e["previous"], e["state"]) for e in bins] == [("unknown", "water ouzel"), ("water ouzel", "unknown")]
    # frames: changes (the default with regions): no per-frame lines at all.
    assert all("state" in line for line in jsonl_rows(tmp_path, "cam"))
    # Samples: the folder-per-class layout train reads, at most samples_max_files per region.
    for region in ("door", "bins"):
        kept = sorted(samples.glob(f"{region}/*/*.jpg"))
        assert 1 <= len(kept) <= 4, kept
        assert {p.parent.name for p in kept} <= set(LABELS.values())
    assert any(p.name.endswith("-confirm.jpg") for p in samples.glob("door/*/*.jpg"))


def test_every_frame_is_written_with_frames_all(tmp_path, shared):
    """The door has its own model (a copy of the embedded one, so a second session): each region's frames
    are run on their own model, in the same batches' turn."""
    from edge_infer.classifier.manifest import default_model_path

    own = tmp_path / "door-model"
    shutil.copytree(default_model_path().parent, own)
    write_video(tmp_path / "clip.avi", [(A, 20)])
    regions = [{**REGIONS[0], "model": {"path": str(own / "model.onnx")}}, REGIONS[1]]
    cfg = write_config(tmp_path, [camera("clip.avi", frames="all", stall_after_s=30, regions=regions)])
    with RunningApp(cfg) as run:
        wait_for(lambda: run.sample("edge_infer_camera_up", source="cam") == 0
                 and run.sample("edge_infer_camera_reconnects_total", source="cam") is not None, 30, "ended")
        wait_for(lambda: len(events(tmp_path, "cam", "door")) == 1, 10, "door confirmed")
    rows = [r for r in jsonl_rows(tmp_path, "cam") if "status" in r]
    by_region = {region: [r for r in rows if r["region"] == region] for region in ("door", "bins")}
    assert len(by_region["door"]) >= 10 and len(by_region["bins"]) == len(by_region["door"])
    assert {r["predictions"][0]["label"] for r in by_region["door"]} == {"tench"}
    assert by_region["door"][0]["image"] == {"width": 320, "height": 240}  # the crop, not the frame
    assert {r["predictions"][0]["label"] for r in by_region["bins"]} == {"water ouzel"}


def test_a_pixel_crop_outside_the_frame_is_refused_naming_its_key(tmp_path, shared, caplog):
    write_video(tmp_path / "clip.avi", [(A, 10)])
    regions = [{"name": "door", "crop": [0, 0, 800, 240]}]
    cfg = write_config(tmp_path, [camera("clip.avi", regions=regions, loop=True)])
    with RunningApp(cfg) as run:
        wait_for(lambda: "sources[0].regions[0].crop [0, 0, 800, 240] is outside the 640x480 frame" in caplog.text,
                 20, "the refusal")
        assert run.sample("edge_infer_camera_up", source="cam") == 0 and run.get("/readyz")[0] == 200


def test_states_that_are_not_labels_of_the_model_are_refused_at_start(tmp_path, shared):
    from edge_infer.config import load_config
    from edge_infer.errors import InvalidConfig
    from edge_infer.wiring.stages import camera_region_crops

    write_video(tmp_path / "clip.avi", [(A, 10)])
    regions = [{"name": "door", "crop": [0, 0, 0.5, 0.5], "states": ["open", "tench"]}]
    cfg = load_config(write_config(tmp_path, [camera("clip.avi", regions=regions)]))
    with pytest.raises(InvalidConfig, match=r"sources\[0\]\.regions\[0\]\.states: 'open' not among the labels"):
        camera_region_crops(list(cfg.sources), _serving(), 0, cfg.batch.max_size)


def _serving():
    from edge_infer.classifier.session import ModelSession

    return ModelSession.load(None)


@pytest.mark.slow
def test_rtsp_scenes_switch_once_per_scene(tmp_path, shared, rtsp):
    """The RTSP server shows each photo of a folder for seconds_per_image, in a loop: two scenes, so every
    switch is one change, and none while a scene holds."""
    from tests.support.rtsp import start_rtsp_server

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, photo in enumerate((A, B)):
        frame_of(photo).save(photos / f"{i}.jpg", quality=95)
    with start_rtsp_server(photos, seconds_per_image=3.0, fps=10) as server:
        cfg = write_config(tmp_path, [camera(server.url, fps=5, loop=True)])
        with RunningApp(cfg) as run:
            wait_for(lambda: len(events(tmp_path, "cam", "door")) >= 4, 40, "four changes of the door")
            run.sample("edge_infer_camera_up", source="cam")
    door = events(tmp_path, "cam", "door")
    states = [e["state"] for e in door]
    assert states[0] in ("tench", "robin") and all(s != "unknown" for s in states)
    assert all(a != b for a, b in zip(states, states[1:]))  # each change is to the other scene
    times = [e["frame"]["timestamp"] for e in door]
    assert times == sorted(times)
    bins = events(tmp_path, "cam", "bins")
    assert [e["state"] for e in bins] == ["water ouzel"]  # the still half never changes
    # The scenes alternate every 3 s: four changes span at least 3 switches' worth of time.
    import datetime as dt

    span = (dt.datetime.fromisoformat(times[-1].replace("Z", "+00:00"))
            - dt.datetime.fromisoformat(times[0].replace("Z", "+00:00"))).total_seconds()
    assert span >= 2 * 3.0 * 0.9
    shutil.rmtree(photos)


@pytest.mark.slow
def test_states_are_retained_and_home_assistant_discovers_and_forgets_the_regions(tmp_path, shared):
    pytest.importorskip("paho.mqtt", reason="needs paho-mqtt: pip install -e '.[mqtt,dev]'")
    from tests.support.mqtt import Broker, Subscriber

    write_video(tmp_path / "clip.avi", SCRIPT)
    topics = ("edge-infer/#", "homeassistant/#")
    door_state, bins_state = "edge-infer/pi1/cam/door/state", "edge-infer/pi1/cam/bins/state"
    door_config, bins_config = "homeassistant/sensor/pi1_cam_door/config", "homeassistant/sensor/pi1_cam_bins/config"

    def config(regions: list[dict]) -> Path:
        mqtt = {"host": "127.0.0.1", "port": broker.port, "device": "pi1", "reconnect_max_s": 1,
                "connect_timeout_s": 5, "homeassistant": True}
        return write_config(tmp_path, [camera("clip.avi", regions=regions)], output={"mqtt": mqtt})

    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port, topics=topics) as sub:
        with RunningApp(config(REGIONS)):
            wait_for(lambda: len(sub.received(door_state)) >= 4, 30, "the door's third change at the broker")
            # A subscriber arriving now (Home Assistant restarting) is told the current states at once.
            with Subscriber(broker.port, topics=topics, client_id="late", clean=True) as late:
                wait_for(lambda: late.received(door_state) and late.received(bins_state)
                         and late.received(door_config), 10, "retained states and configs")
                assert late.received(door_state)[0][:2] == (b"tench", True)
                assert late.received(bins_state)[0][:2] == (b"water ouzel", True)
                payload, retained, _ = late.received(door_config)[0]
            # Home Assistant restarting says "online" on its status topic: the configs are announced again.
            before = len(sub.received(door_config))
            sub.client.publish("homeassistant/status", b"online", qos=1)
            wait_for(lambda: len(sub.received(door_config)) > before, 10, "the configs announced again")
        assert retained
        sensor = json.loads(payload)
        assert sensor["state_topic"] == door_state and sensor["unique_id"] == "edge_infer_pi1_cam_door"
        assert sensor["availability_topic"] == "edge-infer/pi1/status"
        assert sensor["device"]["identifiers"] == ["edge_infer_pi1"] and sensor["json_attributes_topic"] == \
            "edge-infer/pi1/cam/door/events"
        # The collector saw every change as an event, in order, and each state once per change.
        got = [json.loads(p) for p, _, _ in sub.received("edge-infer/pi1/cam/door/events")]
        assert [(e["previous"], e["state"]) for e in got][:3] == [
            ("unknown", "tench"), ("tench", "robin"), ("robin", "tench")]
        assert [p for p, _, _ in sub.received(door_state)][:4] == [b"unknown", b"tench", b"robin", b"tench"]
        # bins leaves the config: its sensor and its retained state are deleted (empty retained messages).
        with RunningApp(config(REGIONS[:1])):
            wait_for(lambda: (b"", False) in [r[:2] for r in sub.received(bins_config)], 20, "bins' config cleared")
            wait_for(lambda: (b"", False) in [r[:2] for r in sub.received(bins_state)], 20, "bins' state cleared")
            with Subscriber(broker.port, topics=topics, client_id="later", clean=True) as later:
                wait_for(lambda: later.received(door_config), 10, "the door's config")
                time.sleep(0.5)  # retained messages all arrive together as the subscription is made
                assert not later.received(bins_config) and not later.received(bins_state)
    assert json.loads((tmp_path / "results" / ".mqtt-spool" / "retained.json").read_text())["topics"] == sorted(
        [door_config, door_state])
