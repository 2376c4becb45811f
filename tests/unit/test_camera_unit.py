"""Camera pieces: how each URL kind is opened, the reconnect backoff (and its reset, against a real MJPEG stream)."""
from pathlib import Path

from edge_infer.config import parse_config
from edge_infer.lifecycle import backoff_s
from edge_infer.sources.camera import open_args


def cam(tmp_path: Path, **kw):
    data = {"sources": [{"name": "c", "type": "camera", **kw}], "output": {"dir": "out"}}
    return parse_config(data, tmp_path).sources[0]


def test_rtsp_uses_tcp_and_socket_timeouts(tmp_path):
    url, kw = open_args(cam(tmp_path, url="rtsp://10.0.0.5/stream", read_timeout_s=2, open_timeout_s=7))
    assert url == "rtsp://10.0.0.5/stream" and kw["timeout"] == (7.0, 2.0)
    assert kw["options"] == {"rtsp_transport": "tcp", "timeout": "2000000", "fpsprobesize": "0",
                             "protocol_whitelist": "rtsp,rtsps,rtp,srtp,udp,tcp,tls"}
    _, kw = open_args(cam(tmp_path, url="rtsp://h/s", transport="udp"))
    assert kw["options"]["rtsp_transport"] == "udp"


def test_v4l2_device_gets_its_size_and_pixel_format(tmp_path):
    url, kw = open_args(cam(tmp_path, url="/dev/video0", video_size="1280x720", input_format="mjpeg"))
    assert url == "/dev/video0" and kw["format"] == "v4l2"
    assert kw["options"] == {"video_size": "1280x720", "input_format": "mjpeg"}


def test_http_stream_and_relative_video_file(tmp_path):
    _, kw = open_args(cam(tmp_path, url="http://cam.local/mjpeg", read_timeout_s=3))
    assert kw["options"] == {"timeout": "3000000", "protocol_whitelist": "http,https,tcp,tls"}
    c = cam(tmp_path, url="clips/door.mp4")
    assert c.url == str(tmp_path / "clips" / "door.mp4")
    url, kw = open_args(c)
    assert url == c.url and kw["options"] == {"protocol_whitelist": "file"}


def test_backoff_doubles_up_to_the_cap_with_jitter():
    assert backoff_s(0, 1, 30, rnd=lambda: 1.0) == 1
    assert [backoff_s(n, 1, 30, rnd=lambda: 1.0) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert backoff_s(5, 1, 30, rnd=lambda: 0.0) == 1  # jitter spans [min, cap]
    assert backoff_s(10_000, 1, 30, rnd=lambda: 0.5) == 15.5  # no overflow on long outages


def test_a_camera_keeps_only_its_newest_frame_waiting(tmp_path, pyav):
    """Drop oldest: a second sample before the batcher comes replaces the first, in the same tensor."""
    import queue

    import numpy as np
    from prometheus_client import CollectorRegistry

    from edge_infer.decoding.preprocess import PreprocessSpec
    from edge_infer.ops.metrics import Metrics
    from edge_infer.pipeline.tensor_pool import TensorPool
    from edge_infer.sources.camera import CameraSource

    registry = CollectorRegistry()
    prepared: queue.Queue = queue.Queue()
    pool = TensorPool(2, (224, 224, 3), np.uint8)
    source = CameraSource(config=cam(tmp_path, url="rtsp://x/y"), prepared=prepared, pool=pool, spec=PreprocessSpec(),
                          metrics=Metrics(registry))
    frames = [pyav.VideoFrame.from_ndarray(np.full((240, 320, 3), v, np.uint8), format="rgb24") for v in (10, 200)]
    for f in frames:
        source._sample(f, None)
    assert prepared.qsize() == 1 and pool_free(pool) == 1  # one ticket, one tensor in use
    (job,) = prepared.get_nowait().take()
    assert job.frame["seq"] == 2 and job.tensor.mean() > 150  # the newest frame
    assert source.take() is None
    dropped = registry.get_sample_value("edge_infer_frames_dropped_total", {"source": "c", "reason": "superseded"})
    assert dropped == 1
    # Once taken, the next sample needs (and announces) a fresh slot.
    source._sample(frames[0], None)
    assert prepared.qsize() == 1 and pool_free(pool) == 0


def pool_free(pool) -> int:
    return pool._free.qsize()


def test_the_backoff_starts_again_from_its_minimum_once_a_connection_has_delivered_frames(tmp_path, pyav):
    """A camera that was down for a while and then streams: its next outage is retried at once, not after
    reconnect_max_s, as it would be if every failure of its life still counted."""
    from tests.support.daemon import free_port, wait_for
    from tests.support.images import write_images
    from tests.support.mjpeg import MjpegServer

    port = free_port()
    source = mjpeg_camera(tmp_path, port, reconnect_max_s=0.5)
    source.start()
    try:
        wait_for(lambda: source.failures >= 4, 30, "failed connections in a row: nothing listens yet")
        with MjpegServer(write_images(tmp_path / "photos", 2), port=port):
            wait_for(lambda: source.up, 30, "frames")
            wait_for(lambda: source.failures == 0, 30, "the failure count reset while frames flow")
    finally:
        source.stop()
        assert source.join(15)


def test_a_camera_that_hangs_up_after_a_few_frames_keeps_backing_off(tmp_path, pyav):
    """Frames for less than reconnect_max_s do not make a good connection: a flapping link is not hammered."""
    from tests.support.daemon import wait_for
    from tests.support.images import write_images
    from tests.support.mjpeg import MjpegServer

    with MjpegServer(write_images(tmp_path / "photos", 2), fps=10, frames_per_connection=3) as server:
        source = mjpeg_camera(tmp_path, server.httpd.server_address[1], reconnect_max_s=5)
        source.start()
        try:
            wait_for(lambda: source.up, 30, "frames")
            wait_for(lambda: source.failures >= 3, 60, "three hang-ups in a row, each after frames")
        finally:
            source.stop()
            assert source.join(15)


def mjpeg_camera(tmp_path: Path, port: int, reconnect_max_s: float):
    """A real CameraSource on http://127.0.0.1:port/stream, retrying from 0.05 s."""
    import queue

    import numpy as np
    from prometheus_client import CollectorRegistry

    from edge_infer.decoding.preprocess import PreprocessSpec
    from edge_infer.ops.metrics import Metrics
    from edge_infer.pipeline.tensor_pool import TensorPool
    from edge_infer.sources.camera import CameraSource

    config = cam(tmp_path, url=f"http://127.0.0.1:{port}/stream", fps=5, reconnect_min_s=0.05,
                 reconnect_max_s=reconnect_max_s, open_timeout_s=5, read_timeout_s=5)
    return CameraSource(config=config, prepared=queue.Queue(), pool=TensorPool(2, (224, 224, 3), np.uint8),
                        spec=PreprocessSpec(), metrics=Metrics(CollectorRegistry()))
