"""The test-camera infrastructure (tests/support/rtsp*.py), checked with PyAV as the client, as the daemon
will read cameras: MJPEG over RTSP interleaved in TCP, with open and read timeouts."""
from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.paths import SAMPLES
from tests.support.rtsp import PYAV_RTSP_OPTIONS, start_rtsp_server

try:
    import av
except ImportError:  # the pyav fixture skips every test, or fails it in CI
    av = None
pytestmark = pytest.mark.usefixtures("pyav")

# Three photos the model classifies confidently, all 500x375 (4:3, so the 640x480 stream does not distort them).
PHOTOS = ["n01440764_tench.JPEG", "n01558993_robin.JPEG", "n01601694_water_ouzel.JPEG"]
OPEN_TIMEOUT = 5.0  # PyAV's interrupt callback: seconds for av.open, then per read


@pytest.fixture
def photos(shared: Path, tmp_path: Path, rtsp: None) -> Path:
    folder = tmp_path / "camera"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(SAMPLES / name, folder / name)
    return folder


def open_camera(url: str, **options: str):  # noqa: ANN201 - av.container.InputContainer
    return av.open(url, options={**PYAV_RTSP_OPTIONS, **options}, timeout=(OPEN_TIMEOUT, OPEN_TIMEOUT))


def read_frames(container, n: int) -> list:  # noqa: ANN001
    frames = []
    for frame in container.decode(video=0):
        frames.append(frame)
        if len(frames) == n:
            break
    return frames


def pixels(frame) -> np.ndarray:  # noqa: ANN001
    return frame.to_ndarray(format="rgb24")


def nearest_photo(rgb: np.ndarray, folder: Path) -> int:
    """Index (in sorted order) of the photo that a 640x480 frame looks most like."""
    h, w = rgb.shape[:2]
    diffs = []
    for name in sorted(PHOTOS):
        ref = np.asarray(Image.open(folder / name).convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
        diffs.append(np.abs(ref.astype(np.int16) - rgb).mean())
    return int(np.argmin(diffs))


def test_frames_follow_a_deterministic_schedule(photos: Path) -> None:
    with start_rtsp_server(photos, seconds_per_image=0.3, fps=10) as cam:
        t0 = time.monotonic()
        container = open_camera(cam.url)
        opened = time.monotonic() - t0
        try:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "mjpeg"
            frames = read_frames(container, 12)  # 4 images at 3 frames each: 0, 1, 2, 0
        finally:
            container.close()
        assert opened < 1.0, f"av.open took {opened:.2f} s (fpsprobesize=0 should make it immediate)"

    assert [(f.width, f.height) for f in frames] == [(640, 480)] * 12
    # A client that starts the stream gets frame k at time k / fps, so the schedule says what is on screen.
    assert [round(f.time, 3) for f in frames] == [k / 10 for k in range(12)]
    shown = [cam.image_index(f.time) for f in frames]
    assert shown == [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0]
    arrays = [pixels(f) for f in frames]
    for k in range(1, 12):
        if shown[k] == shown[k - 1]:
            assert np.array_equal(arrays[k], arrays[k - 1]), f"frames {k - 1} and {k} show one image: identical"
        else:
            assert np.abs(arrays[k].astype(np.int16) - arrays[k - 1]).mean() > 20, f"frame {k} should change image"
    assert [nearest_photo(a, photos) for a in arrays] == shown
    changes = cam.image_changes()
    assert [(c["index"], c["frame"], c["file"]) for c in changes[:4]] == [
        ("0", "0", PHOTOS[0]), ("1", "3", PHOTOS[1]), ("2", "6", PHOTOS[2]), ("0", "9", PHOTOS[0])]


def test_freeze_streams_identical_frames(photos: Path) -> None:
    with start_rtsp_server(photos, seconds_per_image=0.1, fps=10, freeze=True) as cam:
        container = open_camera(cam.url)
        try:
            frames = read_frames(container, 8)
        finally:
            container.close()
        assert {c["index"] for c in cam.image_changes()} == {"0"}
    first = pixels(frames[0])
    assert all(np.array_equal(pixels(f), first) for f in frames[1:])
    assert nearest_photo(first, photos) == 0


def test_clients_share_one_pipeline(photos: Path) -> None:
    with start_rtsp_server(photos, seconds_per_image=0.3, fps=10) as cam:
        first = open_camera(cam.url)
        try:
            read_frames(first, 6)
            second = open_camera(cam.url)
            try:
                joined = read_frames(second, 3)
                latest = read_frames(first, 1)[0]
            finally:
                second.close()
        finally:
            first.close()
        assert cam.stderr.count("MEDIA new pipeline") == 1
    # The joiner's frame times are the stream's clock (from the PLAY reply's Range), not 0 again.
    assert joined[0].time >= 0.5
    assert abs(joined[-1].time - latest.time) < 0.5


def test_server_death_ends_the_read_and_a_restart_serves_again(photos: Path) -> None:
    with start_rtsp_server(photos, seconds_per_image=0.3, fps=10) as cam:
        container = open_camera(cam.url)
        try:
            frames = container.decode(video=0)
            next(frames)
            t0 = time.monotonic()
            cam.stop()
            # The server's socket closes: FFmpeg reads EOF, so PyAV's decode loop just ends (no exception).
            ended_by = "end of stream"
            try:
                for _ in range(50):
                    next(frames)
                ended_by = "still reading"
            except StopIteration:
                pass
            except av.error.FFmpegError as e:
                ended_by = type(e).__name__
            elapsed = time.monotonic() - t0
        finally:
            container.close()
        assert ended_by == "end of stream"
        assert elapsed < 3.0, f"the read took {elapsed:.2f} s to notice the server was gone"

        t0 = time.monotonic()
        with pytest.raises(av.error.ConnectionRefusedError):
            open_camera(cam.url)
        assert time.monotonic() - t0 < 1.0

        cam.restart()
        container = open_camera(cam.url)
        try:
            again = read_frames(container, 2)
        finally:
            container.close()
    assert [f.time for f in again] == [0.0, 0.1]  # a fresh stream: frame 0 again
    assert cam.stderr.count("MEDIA new pipeline") == 2


def test_hung_server_read_times_out(photos: Path) -> None:
    with start_rtsp_server(photos, seconds_per_image=0.3, fps=10) as cam:
        container = open_camera(cam.url, timeout="1000000")  # rtsp socket I/O timeout: 1 s
        try:
            frames = container.decode(video=0)
            next(frames)
            cam.suspend()  # socket open, nothing sent: only a timeout can notice
            t0 = time.monotonic()
            with pytest.raises(av.error.TimeoutError):
                for _ in range(50):
                    next(frames)
            elapsed = time.monotonic() - t0
        finally:
            container.close()
            cam.resume()
    assert 0.5 < elapsed < 3.0, f"timed out after {elapsed:.2f} s, the option says 1 s"


def test_a_stream_frame_classifies_like_its_jpeg(photos: Path) -> None:
    from edge_infer.classifier.session import ModelSession
    from edge_infer.decoding.preprocess import prepare

    session = ModelSession.load()
    spec = session.manifest.preprocess

    def top1(source: str | bytes) -> int:
        return int(np.argmax(session.run(prepare(source, spec).tensor[None])[0]))

    with start_rtsp_server(photos, seconds_per_image=0.3, fps=10) as cam:
        container = open_camera(cam.url)
        try:
            frames = read_frames(container, 9)
        finally:
            container.close()
    by_image: dict[int, bytes] = {}
    for f in frames:
        if round(f.time * cam.fps) % cam.frames_per_image == 1:  # mid-image, well away from a change
            png = io.BytesIO()
            f.to_image().save(png, "PNG")  # lossless: prepare() takes encoded bytes, not a PIL image
            by_image[cam.image_index(f.time)] = png.getvalue()
    assert sorted(by_image) == [0, 1, 2]
    for i, name in enumerate(sorted(PHOTOS)):
        assert top1(by_image[i]) == top1(str(photos / name)), f"{name}: stream frame and JPEG disagree"
