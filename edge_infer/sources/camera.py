"""Camera source: RTSP, HTTP(S) streams, V4L2 devices and video files, through PyAV (FFmpeg).

One thread per camera reads the stream continuously (a live stream must be drained or it backs up), and
every 1/fps seconds takes the newest frame, resized and cropped straight into a tensor of the shared pool.
Each camera has at most one frame waiting for the batcher: a newer sample replaces it (the oldest is
dropped and counted, ``superseded``), and when the pool has no free tensor the daemon is busy and the
frame is dropped (``pipeline_full``). A camera never waits, so it can never hold up a folder. Every blocking call has a timeout;
failures reopen the stream with exponential backoff and jitter (which starts again from its minimum once a
connection has delivered frames for ``reconnect_max_s``); a feed that sends nothing is stalled, one
that sends identical frames is frozen, and both are logged and exported.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import queue
import threading
import time
from typing import Any

from ..config import CameraSourceConfig
from ..decoding.preprocess import PreprocessSpec, crop_image
from ..lifecycle import Stage, backoff_s
from ..ops.metrics import Metrics
from ..pipeline.jobs import CameraFrame, Job, Ticket
from ..pipeline.tensor_pool import TensorPool
from ..regions.crops import RegionCrop

log = logging.getLogger(__name__)


class StreamEnded(Exception):
    """A video file reached its end (and does not loop)."""


class Stalled(Exception):
    """Packets but no picture for ``stall_after_s``."""


# FFmpeg's protocols each kind of URL needs, and no others: a stream or file can name further resources
# (an HLS playlist its segments, a concat list its parts), and without a white-list FFmpeg would fetch
# any URL or read any local file they name.
PROTOCOLS = {"rtsp": "rtsp,rtsps,rtp,srtp,udp,tcp,tls", "http": "http,https,tcp,tls", "file": "file"}


def open_args(cfg: CameraSourceConfig) -> tuple[str, dict[str, Any]]:
    """(url, keyword arguments for ``av.open``) for each kind of camera URL."""
    timeouts = (cfg.open_timeout_s, cfg.read_timeout_s)  # PyAV's interrupt callback: open, then each read
    io_timeout_us = str(int(cfg.read_timeout_s * 1_000_000))  # FFmpeg's own socket timeout
    url = cfg.url
    if url.startswith("/dev/"):
        options = {k: v for k, v in (("video_size", cfg.video_size), ("input_format", cfg.input_format)) if v}
        return url, {"format": "v4l2", "options": options, "timeout": timeouts}
    if url.startswith(("rtsp://", "rtsps://")):
        # fpsprobesize=0: do not read ~2 s of frames to guess the frame rate before returning.
        options = {"rtsp_transport": cfg.transport, "timeout": io_timeout_us, "fpsprobesize": "0",
                   "protocol_whitelist": PROTOCOLS["rtsp"]}
        return url, {"options": options, "timeout": timeouts}
    if "://" in url:  # http(s) MJPEG and other network streams
        return url, {"options": {"timeout": io_timeout_us, "protocol_whitelist": PROTOCOLS["http"]},
                     "timeout": timeouts}
    return url, {"options": {"protocol_whitelist": PROTOCOLS["file"]}, "timeout": timeouts}


class CameraSource(Stage):
    """One camera: a reading thread that samples frames into ``prepared`` (see the module docstring)."""

    poll_s = 0.5
    kind = "camera"

    def __init__(self, *, config: CameraSourceConfig, prepared: "queue.Queue[Job | Ticket]",
                 pool: TensorPool, spec: PreprocessSpec, metrics: Metrics, max_pixels: int = 50_000_000,
                 regions: tuple[RegionCrop, ...] = ()) -> None:
        super().__init__(f"camera-{config.name}")
        self.config = config
        self._regions = regions
        self._keep_crops = config.samples_dir is not None
        self.last_frame_at = time.monotonic()  # of the last decoded frame: regions go unknown when it is old
        self._max_pixels = max_pixels
        self._prepared, self._pool, self._spec, self._metrics = prepared, pool, spec, metrics
        self.is_file = "://" not in config.url and not config.url.startswith("/dev/")
        self.up = False
        self.frozen = False
        self.seq = 0
        self.failures = 0  # failed connections in a row: what the reconnect backoff grows with
        self._last_hash = b""
        self._slot_lock = threading.Lock()
        # The newest sampled frame the batcher has not taken yet (a job for each region, or one for
        # the whole frame):
        self._slot: list[CameraFrame] | None = None
        self._announced = False  # a claim ticket for the slot is in the batcher's queue
        self._same_since = 0.0

    def start(self) -> None:
        self._metrics.init_source(self.config.name, "camera")
        self._set_up(False)
        super().start()  # armed: the stream is opened by the thread, so a dead camera never delays start-up

    # -- connection loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        import av

        name = self.config.name
        while self.should_keep_running():
            try:
                self._stream(av)
                self.failures = 0 if self.is_file else self.failures  # a file that ended cleanly
                if self.is_file and not self.config.loop:
                    log.info("camera %s: %s ended", name, self.config.url)
                    self._set_up(False)
                    while not self.wait(self.poll_s):  # nothing more to read; idle until stopped
                        pass
                    return
                continue
            except Stalled:
                self._metrics.camera_stalls_total.labels(name).inc()
                log.warning("camera %s: stalled, no picture for %.0fs; reopening", name, self.config.stall_after_s)
            except (av.error.TimeoutError, av.error.ExitError):  # ExitError: PyAV's own read timeout fired
                self._metrics.camera_stalls_total.labels(name).inc()
                log.warning("camera %s: stalled, nothing received for %.0fs; reopening", name,
                            self.config.read_timeout_s)
            except StreamEnded:
                log.warning("camera %s: the stream ended; reopening", name)
            except (av.error.FFmpegError, OSError, ValueError) as e:
                log.warning("camera %s: %s: %s", name, type(e).__name__, e)
            self._set_up(False)
            delay = backoff_s(self.failures, self.config.reconnect_min_s, self.config.reconnect_max_s)
            self.failures += 1
            if self.wait(delay):
                return
            self._metrics.camera_reconnected(name)

    def _stream(self, av: Any) -> None:
        url, kwargs = open_args(self.config)
        container = av.open(url, **kwargs)
        try:
            stream = container.streams.video[0]
            self._check_size(stream.codec_context.width, stream.codec_context.height)
            period = 1.0 / self.config.fps
            t0 = time.monotonic()
            first_pts: float | None = None
            next_sample = 0.0
            last_frame = time.monotonic()
            good_from: float | None = None  # this connection's first frame
            for packet in container.demux(stream):
                if not self.should_keep_running():
                    return
                for frame in packet.decode():
                    self._check_size(frame.width, frame.height)  # a stream may change size midway
                    now = time.monotonic()
                    last_frame = self.last_frame_at = now
                    good_from = now if good_from is None else good_from
                    if self.failures and now - good_from >= self.config.reconnect_max_s:
                        # Frames for as long as the longest wait: a good connection, so the next outage is
                        # retried from reconnect_min_s again. (One that drops sooner keeps backing off.)
                        self.failures = 0
                    media = frame.time
                    if self.is_file and media is not None:
                        # A file plays at its own pace: it stands in for a camera, not a batch job.
                        first_pts = media if first_pts is None else first_pts
                        if self.wait(max(0.0, t0 + (media - first_pts) - now)):
                            return
                        clock = media - first_pts
                    else:
                        clock = now - t0
                    self._set_up(True)
                    if clock >= next_sample:
                        next_sample = max(next_sample + period, clock)  # no catch-up bursts after a pause
                        self._sample(frame, media)
                if time.monotonic() - last_frame > self.config.stall_after_s:
                    raise Stalled()
            if not self.is_file:
                raise StreamEnded()
        finally:
            container.close()

    def _check_size(self, width: int, height: int) -> None:
        """Frames larger than pipeline.max_pixels are refused as the stream is opened (and if it grows):
        the same bound as for files, against a stream that would have every frame decoded at that size."""
        if width * height > self._max_pixels:
            raise ValueError(f"frames of {width}x{height} exceed pipeline.max_pixels ({self._max_pixels})")
        for region in self._regions:
            region.box(width, height)  # a crop outside the frame: refused as the stream opens, naming its key

    # -- sampling -------------------------------------------------------------------------------------------
    def _sample(self, frame: Any, media: float | None) -> None:
        name = self.config.name
        self._check_frozen(frame)
        with self._slot_lock:
            # The batcher has not taken the previous sample yet: the new frame replaces it (drop oldest),
            # reusing its tensors, so a camera never has more than one frame in the pipeline.
            old, self._slot = self._slot, None
        if old is not None:
            self._metrics.frame_dropped(name, "superseded")
            tensors = [j.tensor for j in old]
        else:
            tensors = self._acquire(max(1, len(self._regions)))
            if tensors is None:
                self._metrics.frame_dropped(name, "pipeline_full")
                return
        t0 = time.monotonic()
        try:
            jobs = self._prepare(frame.to_image(), tensors)
        except (ValueError, OSError) as e:
            for tensor in tensors:
                self._pool.release(tensor)
            self._metrics.frame_dropped(name, "decode")
            log.warning("camera %s: cannot convert a frame: %s", name, e)
            return
        self.seq += 1
        captured = time.time()
        stamp = {"timestamp": dt.datetime.fromtimestamp(captured, dt.timezone.utc)
                 .isoformat(timespec="milliseconds").replace("+00:00", "Z"), "seq": self.seq}
        if media is not None:
            stamp["media_time_s"] = round(media, 3)
        elapsed = time.monotonic() - t0
        for job in jobs:
            job.rel = f"{name}/{job.region}#{self.seq}" if job.region else f"{name}#{self.seq}"
            job.detected_at, job.frame = captured, dict(stamp)
            job.timings["preprocess"] = elapsed
        with self._slot_lock:
            self._slot = jobs
            announce = not self._announced
            self._announced = True
        if announce:
            # The batcher gets a claim ticket, not the frame: it takes whatever is newest when it gets there.
            self._prepared.put(Ticket(source=name, take=self.take))

    def _acquire(self, n: int) -> list[Any] | None:
        """``n`` free tensors, or None (and none taken): never wait, a busy daemon drops camera frames."""
        tensors = []
        for _ in range(n):
            tensor = self._pool.acquire(0)
            if tensor is None:
                for t in tensors:
                    self._pool.release(t)
                return None
            tensors.append(tensor)
        return tensors

    def _prepare(self, image: Any, tensors: list[Any]) -> list[CameraFrame]:
        """The frame into ``tensors``: each region's crop, cut before resizing so that a small region keeps
        its detail, through the preprocessing of its own model; or the whole frame."""
        name = self.config.name
        if not self._regions:
            prepared = crop_image(image, self._spec, out=tensors[0])
            job = CameraFrame(source=name, rel="")
            job.tensor, job.width, job.height = tensors[0], prepared.width, prepared.height
            return [job]
        jobs = []
        for region, tensor in zip(self._regions, tensors):
            part = image.crop(region.box(image.width, image.height))
            prepared = crop_image(part, region.spec, out=tensor)
            job = CameraFrame(source=name, rel="", region=region.config.name,
                              session=region.session, crop=part if self._keep_crops else None)
            job.tensor, job.width, job.height = tensor, prepared.width, prepared.height
            jobs.append(job)
        return jobs

    def take(self) -> list[CameraFrame] | None:
        """The newest sampled frame's jobs, handed to the batcher (None if they were already taken)."""
        with self._slot_lock:
            jobs, self._slot = self._slot, None
            self._announced = False
        return jobs

    def _check_frozen(self, frame: Any) -> None:
        digest = hashlib.blake2b(frame.planes[0], digest_size=16).digest()
        now = time.monotonic()
        if digest != self._last_hash:
            self._last_hash, self._same_since = digest, now
            if self.frozen:
                self.frozen = False
                self._metrics.camera_frozen.labels(self.config.name).set(0)
                log.info("camera %s: picture moving again", self.config.name)
        elif not self.frozen and now - self._same_since >= self.config.frozen_after_s:
            self.frozen = True
            self._metrics.camera_frozen.labels(self.config.name).set(1)
            log.warning("camera %s: frozen, identical frames for %.0fs", self.config.name, now - self._same_since)

    def _set_up(self, up: bool) -> None:
        if up != self.up or not up:
            self._metrics.set_camera_up(self.config.name, up)
        if up and not self.up:
            log.info("camera %s: receiving frames", self.config.name)
        self.up = up
