"""A tiny HTTP MJPEG camera (multipart/x-mixed-replace), as many IP cameras and ESP32-CAMs serve."""
from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

BOUNDARY = "frame"


class MjpegServer:
    """Streams ``photos`` in turn, each for ``seconds_each`` at ``fps``, at http://127.0.0.1:PORT/stream
    (``port``: 0 for any free one, or a given one, for a camera that was down and comes up).
    ``frames_per_connection``: hang up after that many frames, as a flaky camera or link does."""

    def __init__(self, photos: list[Path], seconds_each: float = 1.0, fps: int = 10, port: int = 0,
                 frames_per_connection: int | None = None) -> None:
        self.frames = []
        for p in photos:
            buf = io.BytesIO()
            Image.open(p).convert("RGB").resize((640, 480)).save(buf, "JPEG", quality=90)
            self.frames.append(buf.getvalue())
        self.seconds_each, self.fps, self.frames_per_connection = seconds_each, fps, frames_per_connection
        self._stop = threading.Event()
        self._handlers: list[threading.Thread] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server._handlers.append(threading.current_thread())
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                t0 = time.monotonic()
                n = 0
                while not server._stop.is_set() and n != server.frames_per_connection:
                    frame = server.frames[int(n / server.fps / server.seconds_each) % len(server.frames)]
                    try:
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(frame)}\r\n\r\n".encode() + frame + b"\r\n")
                    except OSError:
                        return  # the client went away
                    n += 1
                    server._stop.wait(max(0.0, t0 + n / server.fps - time.monotonic()))

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="mjpeg-server")

    def __enter__(self) -> "MjpegServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
        for t in self._handlers:
            t.join(5)
