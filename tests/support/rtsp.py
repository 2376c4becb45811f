"""pytest helpers for test cameras: start ``rtsp_server.py`` under Debian's Python and wait until it serves.

    reason = rtsp_available()          # None, or why not (for pytest.skip)
    with start_rtsp_server(folder, seconds_per_image=0.5, fps=10) as cam:
        av.open(cam.url, options=PYAV_RTSP_OPTIONS, timeout=(5, 5))
        cam.stop(); cam.restart()      # same port: a camera that went away and came back
        cam.suspend(); cam.resume()    # SIGSTOP/SIGCONT: a camera that hangs with its socket open

No threads: the READY line is read with ``select`` and the server's stderr goes to a file, so nothing is
left running in this process (the suite fails tests that leak threads). ``stop`` always reaps the process.
"""
from __future__ import annotations

import functools
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
INSTALL_HINT = "run .ci/install-system-deps as root"

# What a PyAV client of these servers passes to av.open (FFmpeg 5+ option names; values are strings):
#   rtsp_transport=tcp  RTP interleaved in the RTSP TCP connection (no UDP ports)
#   timeout             socket I/O timeout in microseconds: a server that stops sending raises
#                       av.error.TimeoutError (errno 110) after that long. ("stimeout" was removed in
#                       FFmpeg 5 and is silently ignored.)
#   fpsprobesize=0      do not read frames to guess the frame rate: without it av.open takes ~2 s and the
#                       first frames it returns are ~2 s old (the SDP already gives the rate).
PYAV_RTSP_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000", "fpsprobesize": "0"}

_CHECK = r"""
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstApp", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstApp, GstRtspServer
Gst.init(None)
needed = ["appsrc", "filesrc", "jpegdec", "jpegenc", "videoconvert", "videoscale", "appsink", "rtpjpegpay"]
missing = [e for e in needed if Gst.ElementFactory.find(e) is None]
print("missing GStreamer elements: " + ", ".join(missing) if missing else "ok")
"""


def _child_env() -> dict[str, str]:
    """The environment without the venv's Python settings, which would confuse Debian's interpreter."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@functools.lru_cache(maxsize=1)
def rtsp_available() -> str | None:
    """None when ``/usr/bin/python3`` can run the server; otherwise the reason, for a skip message."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"needs Debian's {SYSTEM_PYTHON} with GStreamer's RTSP server ({INSTALL_HINT})"
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=30,
                           env=_child_env(), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"{SYSTEM_PYTHON} took over 30 s to load GStreamer"
    out = r.stdout.strip()
    if r.returncode == 0 and out == "ok":
        return None
    detail = out or (r.stderr.strip().splitlines() or ["no output"])[-1]
    return f"GStreamer RTSP server not usable by {SYSTEM_PYTHON}: {detail} ({INSTALL_HINT})"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtspServer:
    """One ``rtsp_server.py`` process. Use ``start_rtsp_server``; ``with`` (or ``close``) stops it and
    deletes its stderr log file; ``stop`` alone keeps the log for a ``restart``."""

    def __init__(self, images_dir: Path, port: int, seconds_per_image: float, fps: int, freeze: bool,
                 mount: str, ready_timeout: float) -> None:
        self.images_dir, self.port, self.mount = Path(images_dir), port, mount
        self.seconds_per_image, self.fps, self.freeze = seconds_per_image, fps, freeze
        self.ready_timeout = ready_timeout
        self.url = f"rtsp://127.0.0.1:{port}{mount}"
        images = sorted(p for p in self.images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
        self.images = images[:1] if freeze else images  # what index i in the stream shows, in order
        self.frames_per_image = max(1, round(seconds_per_image * fps))  # as the server computes it
        self._proc: subprocess.Popen[bytes] | None = None
        fd, log = tempfile.mkstemp(prefix="rtsp-server-", suffix=".log")
        os.close(fd)
        self._log = Path(log)
        self._saved_stderr: str | None = None  # the log's text once it is deleted

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> "RtspServer":
        """Start the process and wait for READY; retries while the port is still held (e.g. a restart)."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            error = self._start_once(deadline)
            if error is None:
                return self
            if "cannot listen" not in error or time.monotonic() >= deadline:
                raise RuntimeError(f"RTSP server did not start: {error}\n--- stderr ---\n{self.stderr[-3000:]}")
            time.sleep(0.2)

    def _start_once(self, deadline: float) -> str | None:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--images", str(self.images_dir),
               "--seconds-per-image", str(self.seconds_per_image), "--fps", str(self.fps), "--mount", self.mount]
        if self.freeze:
            cmd.append("--freeze")
        with open(self._log, "ab") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                    env=_child_env())
        self._proc = proc
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self._terminate()
                return f"no READY line within {self.ready_timeout} s"
            ready, _, _ = select.select([proc.stdout], [], [], left)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:  # EOF: the server exited
                    self._terminate()
                    return f"exited with code {proc.returncode} before READY: {self.stderr.strip()[-300:]}"
                line += chunk
        if not line.startswith(b"READY "):
            self._terminate()
            return f"unexpected first line {line!r}"
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (after SIGCONT, in case it is suspended); SIGKILL if still alive after ``timeout``."""
        self._terminate(timeout)

    def restart(self) -> "RtspServer":
        """Stop, then start again on the same port and mount (frame 0 again)."""
        self.stop()
        return self.start()

    def suspend(self) -> None:
        """SIGSTOP: the server keeps its sockets open but sends nothing (a hung camera)."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def _terminate(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> "RtspServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop and delete the stderr log file (its text stays readable as ``.stderr``)."""
        self.stop()
        if self._saved_stderr is None:
            self._saved_stderr = self.stderr
        self._log.unlink(missing_ok=True)

    # --- what is on screen -----------------------------------------------------------------------------
    @property
    def stderr(self) -> str:
        """Everything the server(s) wrote on stderr so far, including ``IMAGE index=...`` lines."""
        if self._saved_stderr is not None:
            return self._saved_stderr
        try:
            return self._log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def image_changes(self) -> list[dict[str, str]]:
        """The server's ``IMAGE index=I frame=N pts=T wall=EPOCH file=NAME`` log lines, parsed."""
        return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in self.stderr.splitlines()
                if line.startswith("IMAGE ")]

    def image_index(self, frame_time: float) -> int:
        """Which image a frame with stream time ``frame_time`` (PyAV ``frame.time``) shows.

        Exact for a client that started the stream (its frame k has time k / fps); for a client that
        joined a running stream, ``frame.time`` is the stream time give or take a fraction of a frame,
        so a frame right at a change of image may be attributed to its neighbour.
        """
        frame_number = round(frame_time * self.fps)
        return (frame_number // self.frames_per_image) % len(self.images)


def start_rtsp_server(images_dir: str | os.PathLike[str], port: int | None = None, seconds_per_image: float = 1.0,
                      fps: int = 10, freeze: bool = False, mount: str = "/cam",
                      ready_timeout: float = 15.0) -> RtspServer:
    """A running test camera at ``.url`` streaming the JPEGs of ``images_dir`` (sorted), each for
    ``seconds_per_image`` at ``fps``; ``freeze``: the first image forever. Stop it (or use ``with``)."""
    server = RtspServer(Path(images_dir), port or free_port(), seconds_per_image, fps, freeze, mount, ready_timeout)
    try:
        return server.start()
    except BaseException:
        server.close()
        raise
