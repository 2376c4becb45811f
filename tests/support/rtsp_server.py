"""A test camera: an RTSP server that streams a folder of JPEG files as a looping MJPEG video.

Run by Debian's ``/usr/bin/python3`` (GStreamer's Python bindings come from Debian packages, see
``.ci/install-system-deps``), not by the venv::

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 --images DIR \
        --seconds-per-image 1 --fps 10 [--mount /cam] [--freeze]

Why GStreamer: the machine has no ffmpeg binary, and ffmpeg's RTSP output is a client that *pushes* to
a server (ANNOUNCE/RECORD); it cannot *serve* a stream for clients to pull. GstRtspServer can.

Why MJPEG (RTP/JPEG, RFC 2435): it needs no H.264 encoder, and FFmpeg (PyAV) decodes it over RTSP.
Each image is decoded, scaled to ``--size`` (stretched, not letterboxed) and JPEG-encoded once at start;
the stream then sends those same JPEG bytes again and again, so ``--freeze`` frames are byte-identical
and serving costs almost no CPU.

Which image is on screen is deterministic: the pipeline counts frames from 0 and frame ``n`` (PTS
``n / fps``) shows image ``(n // round(seconds_per_image * fps)) % len(images)`` in sorted file-name
order. The media is shared by all clients and is built afresh (frame 0 again) when the first client
connects after none were connected, so a lone client's k-th decoded frame is frame k (PyAV: ``frame.time
== k / fps``). A client that joins a running stream gets the stream's time from the PLAY reply, give or
take a fraction of a frame. Every change of image is also logged on stderr as
``IMAGE index=I frame=N pts=T wall=EPOCH file=NAME``, where ``wall`` is when the frame was queued, about
one frame interval before it is sent. (Tests can also tell the images apart by content.)

Prints ``READY rtsp://127.0.0.1:PORT/MOUNT`` on stdout once serving; exits 0 on SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: E402

JPEG_SUFFIXES = {".jpg", ".jpeg"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def encode_once(path: Path, width: int, height: int, quality: int) -> bytes:
    """The JPEG at ``path`` decoded, scaled to width x height and re-encoded as baseline 4:2:0 JPEG."""
    pipeline = Gst.parse_launch(
        f"filesrc name=src ! jpegdec ! videoconvert ! videoscale ! "
        f"video/x-raw,format=I420,width={width},height={height},pixel-aspect-ratio=1/1 ! "
        f"jpegenc quality={quality} ! appsink name=sink sync=false")
    pipeline.get_by_name("src").set_property("location", str(path))
    pipeline.set_state(Gst.State.PLAYING)
    sample = pipeline.get_by_name("sink").emit("try-pull-sample", 10 * Gst.SECOND)
    pipeline.set_state(Gst.State.NULL)
    if sample is None:
        raise SystemExit(f"cannot decode {path}")
    buf = sample.get_buffer()
    ok, info = buf.map(Gst.MapFlags.READ)
    try:
        return bytes(info.data)
    finally:
        buf.unmap(info)


class Factory(GstRtspServer.RTSPMediaFactory):
    """One shared pipeline ``appsrc ! rtpjpegpay`` fed the pre-encoded frames on a fixed schedule."""

    def __init__(self, frames: list[bytes], names: list[str], frames_per_image: int, fps: int,
                 width: int, height: int) -> None:
        super().__init__()
        self.frames, self.names = frames, names
        self.frames_per_image, self.fps = frames_per_image, fps
        self.caps = f"image/jpeg,width={width},height={height},framerate={fps}/1"
        self.set_shared(True)

    def do_create_element(self, url):  # noqa: ANN001 - GstRtspServer's virtual method
        # Non-live appsrc with explicit timestamps: the server's sinks sync to the clock, so it plays at
        # real-time speed; need-data pushes the next frame whenever appsrc's small queue has room.
        bin_ = Gst.parse_launch(
            f"( appsrc name=src is-live=false format=time max-buffers=2 block=false caps={self.caps} "
            f"! rtpjpegpay name=pay0 pt=26 )")
        src = bin_.get_by_name("src")
        state = {"n": 0, "shown": -1}
        src.connect("need-data", self._need_data, state)
        log("MEDIA new pipeline (frame 0)")
        return bin_

    def _need_data(self, src: GstApp.AppSrc, _length: int, state: dict) -> None:
        n = state["n"]
        index = (n // self.frames_per_image) % len(self.frames)
        buf = Gst.Buffer.new_wrapped(self.frames[index])
        buf.pts = n * Gst.SECOND // self.fps
        buf.duration = Gst.SECOND // self.fps
        if index != state["shown"]:
            state["shown"] = index
            log(f"IMAGE index={index} frame={n} pts={buf.pts / Gst.SECOND:.3f} wall={time.time():.3f} "
                f"file={self.names[index]}")
        state["n"] = n + 1
        src.emit("push-buffer", buf)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--images", type=Path, required=True, help="folder of .jpg/.jpeg files (sorted by name)")
    ap.add_argument("--seconds-per-image", type=float, default=1.0)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--mount", default="/cam")
    ap.add_argument("--freeze", action="store_true", help="stream the first image forever (identical frames)")
    ap.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the stream (multiples of 8)")
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality of the stream")
    args = ap.parse_args(argv)

    Gst.init(None)
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in JPEG_SUFFIXES)
    if not paths:
        raise SystemExit(f"no JPEG files in {args.images}")
    if args.freeze:
        paths = paths[:1]
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = [encode_once(p, width, height, args.quality) for p in paths]
    frames_per_image = max(1, round(args.seconds_per_image * args.fps))

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = Factory(frames, [p.name for p in paths], frames_per_image, args.fps, width, height)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{args.port}")

    loop = GLib.MainLoop()  # the server does all its work in callbacks of this loop
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.mount}", flush=True)
    loop.run()
    log("STOP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
