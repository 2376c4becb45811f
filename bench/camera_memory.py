#!/usr/bin/env python3
"""Does the daemon's memory stay flat over a long camera stream?

Streams the shared photos from a local RTSP server (GStreamer, tests/support/rtsp_server.py) at 25 fps into
a daemon sampling 10 frames a second, and prints its resident memory every 30 s. The check: RSS after
`--minutes` (default 10) within 10 MB of RSS after 1 minute.

    python bench/camera_memory.py --images ../shared/images/imagenet-samples --minutes 10
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_infer.tools.procfs import proc_rss_mb  # noqa: E402
from tests.support.rtsp import free_port, start_rtsp_server  # noqa: E402


def frames_done(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('edge_infer_images_total{') and 'outcome="ok"' in line:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--count", type=int, default=20, help="photos in the looping stream")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-infer-cam-") as tmp:
        work = Path(tmp)
        (work / "photos").mkdir()
        for p in sorted(args.images.glob("*.JPEG"))[:args.count]:
            shutil.copy(p, work / "photos" / p.name)
        port = free_port()
        with start_rtsp_server(work / "photos", seconds_per_image=0.5, fps=25) as server:
            cfg = {"sources": [{"name": "cam0", "type": "camera", "url": server.url, "fps": 10}],
                   "output": {"dir": "results"}, "metrics": {"port": port}, "logging": {"level": "warning"}}
            (work / "config.yaml").write_text(json.dumps(cfg))
            daemon = subprocess.Popen([sys.executable, "-m", "edge_infer", "run", "-c", str(work / "config.yaml")],
                                      cwd=ROOT)
            try:
                t0 = time.monotonic()
                at_1min = None
                print(f"{'minutes':>8} {'RSS MB':>8} {'frames ok':>10}", flush=True)
                while (elapsed := time.monotonic() - t0) < args.minutes * 60:
                    time.sleep(min(30, args.minutes * 60 - elapsed))
                    minutes = (time.monotonic() - t0) / 60
                    rss = proc_rss_mb(daemon.pid)
                    if at_1min is None and minutes >= 1:
                        at_1min = rss
                    print(f"{minutes:>8.1f} {rss:>8.1f} {frames_done(port):>10.0f}", flush=True)
                end = proc_rss_mb(daemon.pid)
                if at_1min is not None:
                    print(f"RSS after 1 min {at_1min:.1f} MB, after {args.minutes:g} min {end:.1f} MB: "
                          f"{end - at_1min:+.1f} MB", flush=True)
            finally:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
