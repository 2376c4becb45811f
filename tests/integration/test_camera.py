"""Camera sources against a real RTSP server on loopback (GStreamer), real video files, and dead URLs."""
from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.support.daemon import RunningApp, jsonl_rows, wait_for, write_config
from tests.support.paths import SAMPLES

# Photos the model gets right with confidence, 4:3 like the 640x480 stream.
PHOTOS = {"n01440764_tench.JPEG": 0, "n01558993_robin.JPEG": 15, "n01601694_water_ouzel.JPEG": 20}
pytestmark = pytest.mark.usefixtures("pyav")


def camera(name: str, url: str, **kw) -> dict:
    return {"name": name, "type": "camera", "url": url, "fps": 4, "open_timeout_s": 3, "read_timeout_s": 2,
            "reconnect_min_s": 0.2, "reconnect_max_s": 1, "stall_after_s": 3, **kw}


@pytest.fixture
def photo_dir(shared, rtsp, tmp_path) -> Path:
    d = tmp_path / "photos"
    d.mkdir()
    for p in PHOTOS:
        shutil.copy(SAMPLES / p, d / p)
    return d


def test_rtsp_results_show_the_photo_on_screen_and_survive_a_server_restart(tmp_path, photo_dir):
    from tests.support.rtsp import start_rtsp_server

    with start_rtsp_server(photo_dir, seconds_per_image=1.0, fps=10) as server:
        cfg = write_config(tmp_path, [camera("cam0", server.url)])
        with RunningApp(cfg) as run:
            wait_for(lambda: run.sample("edge_infer_camera_up", source="cam0") == 1, 20, "camera up")
            wait_for(lambda: len(jsonl_rows(tmp_path, "cam0")) >= 12, 30, "frames classified")
            rows = jsonl_rows(tmp_path, "cam0")
            assert all(r["status"] == "ok" and "input_sha256" not in r for r in rows)
            seqs = [r["frame"]["seq"] for r in rows]
            assert seqs == sorted(set(seqs)) and seqs[0] >= 1  # in order; gaps only where frames were dropped
            assert rows[0]["frame"]["timestamp"].endswith("Z") and rows[0]["image"] == {"width": 640, "height": 480}
            # Every photo of the loop turns up as the top-1 of some frames, and nothing else does.
            top1 = [r["predictions"][0]["index"] for r in rows]
            assert set(PHOTOS.values()) <= set(top1)
            assert sum(t in PHOTOS.values() for t in top1) >= 0.9 * len(top1)
            # The server goes away: the camera is reported down, the daemon stays ready.
            server.stop()
            wait_for(lambda: run.sample("edge_infer_camera_up", source="cam0") == 0, 15, "camera down")
            assert run.get("/readyz")[0] == 200
            before = len(jsonl_rows(tmp_path, "cam0"))
            server.restart()
            wait_for(lambda: run.sample("edge_infer_camera_up", source="cam0") == 1, 20, "camera back")
            wait_for(lambda: len(jsonl_rows(tmp_path, "cam0")) >= before + 4, 20, "results again")
            assert run.sample("edge_infer_camera_reconnects_total", source="cam0") >= 1


def test_a_frozen_stream_is_reported(tmp_path, photo_dir):
    from tests.support.rtsp import start_rtsp_server

    with start_rtsp_server(photo_dir, fps=10, freeze=True) as server:
        cfg = write_config(tmp_path, [camera("cam0", server.url, frozen_after_s=1.5)])
        with RunningApp(cfg) as run:
            wait_for(lambda: run.sample("edge_infer_camera_frozen", source="cam0") == 1, 20, "frozen reported")
            assert run.sample("edge_infer_camera_up", source="cam0") == 1  # frozen is not down


def test_a_hung_server_is_a_stall_and_the_camera_comes_back(tmp_path, photo_dir):
    from tests.support.rtsp import start_rtsp_server

    with start_rtsp_server(photo_dir, fps=10) as server:
        cfg = write_config(tmp_path, [camera("cam0", server.url)])
        with RunningApp(cfg) as run:
            wait_for(lambda: run.sample("edge_infer_camera_up", source="cam0") == 1, 20, "camera up")
            server.suspend()  # SIGSTOP: the socket stays open, nothing arrives
            wait_for(lambda: run.sample("edge_infer_camera_up", source="cam0") == 0, 15, "down after read timeout")
            assert run.sample("edge_infer_camera_stalls_total", source="cam0") >= 1
            server.resume()
            wait_for(lambda: run.sample("edge_infer_camera_up", source="cam0") == 1, 30, "back")


def _write_video(path: Path, photos: list[Path], seconds_each: float, fps: int = 10) -> None:
    import av
    from PIL import Image

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuvj420p"
        for p in photos:
            img = Image.open(p).convert("RGB").resize((640, 480))
            for _ in range(int(seconds_each * fps)):
                for packet in stream.encode(av.VideoFrame.from_image(img)):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_a_video_file_plays_as_a_camera_and_ends(tmp_path, shared):
    video = tmp_path / "clip.avi"
    _write_video(video, [SAMPLES / p for p in PHOTOS], seconds_each=1.0)
    cfg = write_config(tmp_path, [camera("clip", "clip.avi", loop=False)])  # relative to the config
    with RunningApp(cfg) as run:
        wait_for(lambda: run.sample("edge_infer_camera_up", source="clip") == 1, 20, "playing")
        wait_for(lambda: run.sample("edge_infer_camera_up", source="clip") == 0, 20, "ended")
        rows = jsonl_rows(tmp_path, "clip")
    # 3 s at 4 samples a second, paced at the file's own rate rather than as fast as it decodes.
    assert 9 <= len(rows) <= 13
    by_time = {round(r["frame"]["media_time_s"]): r["predictions"][0]["index"] for r in rows}
    assert by_time[0] == 0 and by_time[1] == 15 and by_time[2] == 20


def test_frames_over_the_pixel_limit_are_refused_as_the_stream_opens(tmp_path, shared, caplog):
    video = tmp_path / "clip.avi"
    _write_video(video, [SAMPLES / p for p in PHOTOS], seconds_each=1.0)  # 640x480 = 307,200 pixels
    cfg = write_config(tmp_path, [camera("clip", "clip.avi")], pipeline={"max_pixels": 300_000})
    with RunningApp(cfg) as run:
        wait_for(lambda: run.sample("edge_infer_camera_reconnects_total", source="clip") >= 2, 20, "retried")
        assert run.sample("edge_infer_camera_up", source="clip") == 0 and not jsonl_rows(tmp_path, "clip")
    assert "frames of 640x480 exceed pipeline.max_pixels (300000)" in caplog.text


def test_dead_camera_urls_delay_neither_start_nor_stop(tmp_path):
    # A port that accepts connections and never says a word, and a device that does not exist.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        port = silent.getsockname()[1]
        cams = [camera("mute", f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=2),
                camera("nodev", "/dev/video63")]
        sources = [*cams, {"name": "drops", "type": "folder", "path": "inbox", "done_dir": "done",
                           "failed_dir": "failed"}]
        cfg = write_config(tmp_path, sources)
        t0 = time.monotonic()
        run = RunningApp(cfg)
        with run:
            assert time.monotonic() - t0 < 30
            assert run.get("/readyz")[0] == 200  # folders work while cameras are down
            time.sleep(1)
            assert run.sample("edge_infer_camera_up", source="mute") == 0
            assert run.sample("edge_infer_camera_up", source="nodev") == 0
            t_stop = time.monotonic()
        # Stop waits at most for the cameras' open timeout, then the ordered joins.
        assert time.monotonic() - t_stop < 10
    finally:
        silent.close()


def test_jsonl_files_rotate_by_size_and_keep_a_bounded_number(tmp_path):
    import datetime as dt

    from edge_infer.sinks.jsonl import JsonlSink

    clock = [dt.datetime(2026, 11, 29, 23, 59, 0, tzinfo=dt.timezone.utc)]
    sink = JsonlSink(tmp_path, "cam", rotate_bytes=4096, keep_files=3, clock=lambda: clock[0])
    for i in range(200):
        clock[0] += dt.timedelta(milliseconds=300)  # crosses midnight after 200 lines: a new day, a new file
        sink.append({"seq": i, "pad": "x" * 80})
    sink.close()
    files = sorted(tmp_path.glob("cam-*.jsonl"))
    assert len(files) == 3
    lines = [json.loads(x) for f in files for x in f.read_text().splitlines()]
    assert [r["seq"] for r in lines] == list(range(200 - len(lines), 200))  # newest kept, in order, whole
    assert all(f.stat().st_size <= 4096 for f in files)
    assert any(f.name.startswith("cam-20261130") for f in files)


def test_http_mjpeg_camera(tmp_path, shared):
    from tests.support.mjpeg import MjpegServer

    with MjpegServer([SAMPLES / p for p in PHOTOS], seconds_each=1.0, fps=10) as server:
        cfg = write_config(tmp_path, [camera("ipcam", server.url)])
        with RunningApp(cfg) as run:
            wait_for(lambda: len(jsonl_rows(tmp_path, "ipcam")) >= 12, 30, "MJPEG frames classified")
            assert run.sample("edge_infer_camera_up", source="ipcam") == 1
    top1 = [r["predictions"][0]["index"] for r in jsonl_rows(tmp_path, "ipcam")]
    assert set(PHOTOS.values()) <= set(top1)


def test_cameras_and_folders_share_the_pipeline(tmp_path, photo_dir):
    from tests.support.images import write_images
    from tests.support.rtsp import start_rtsp_server

    with start_rtsp_server(photo_dir, fps=25) as server:
        sources = [camera("cam0", server.url, fps=10),
                   {"name": "drops", "type": "folder", "path": "inbox", "done_dir": "done", "failed_dir": "failed"}]
        cfg = write_config(tmp_path, sources, pipeline={"workers": 1})
        with RunningApp(cfg) as run:
            wait_for(lambda: run.sample("edge_infer_camera_up", source="cam0") == 1, 20, "camera up")
            for p in write_images(tmp_path / "staging", 30, size=(800, 600)):
                shutil.copyfile(p, tmp_path / "inbox" / p.name)
            wait_for(lambda: run.sample("edge_infer_images_total", source="drops", outcome="ok") == 30, 60,
                     "every folder file done while the camera streams")
            assert run.sample("edge_infer_images_total", source="cam0", outcome="ok") > 0
    assert len(list((tmp_path / "done").iterdir())) == 30
