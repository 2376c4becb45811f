#!/usr/bin/env python3
"""What do camera regions cost? One camera classified whole, against the same camera with two regions.

A local RTSP server (GStreamer, tests/support/rtsp_server.py) streams the shared photos at 25 fps; a daemon
samples it at ``--fps``. The two configs run in turns (``--rounds`` each, interleaved, so that the machine's
drift falls on both), each for ``--seconds`` after its first frames. Per run: camera frames sampled, the CPU
time of the daemon's whole process tree (decoders included) per sampled frame, and the peak PSS of the tree.
The best run of each side is reported (the least disturbed by whatever else the machine was doing).

    python bench/camera_regions.py --images ../shared/images/imagenet-samples --rounds 3 [--own-model]
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

from edge_infer.tools.procfs import tree_cpu_seconds, tree_pss_mb
from tests.support.rtsp import free_port, start_rtsp_server

REGIONS = [{"name": "left", "crop": [0, 0, 0.5, 1]}, {"name": "right", "crop": [320, 0, 640, 480]}]


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples (every label set)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return sum(float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                   if line.startswith((name + "{", name + " ")))


def run_once(work: Path, url: str, regions: bool, fps: float, seconds: float,
             own_model: Path | None = None) -> dict[str, float]:
    port = free_port()
    crops = [{**r, "model": {"path": str(own_model)}} if own_model else r for r in REGIONS]
    cam = {"name": "cam0", "type": "camera", "url": url, "fps": fps, "frames": "all",
           **({"regions": crops} if regions else {})}
    cfg = {"sources": [cam], "output": {"dir": str(work / ("results-r" if regions else "results"))},
           "metrics": {"port": port}, "logging": {"level": "warning"}}
    (work / "config.yaml").write_text(json.dumps(cfg))
    daemon = subprocess.Popen([sys.executable, "-m", "edge_infer", "run", "-c", str(work / "config.yaml")], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if metric(port, "edge_infer_images_total") >= 2 * fps:  # warmed up, the stream flowing
                    break
            except OSError:
                pass
            time.sleep(0.5)
        per_frame = len(REGIONS) if regions else 1  # images classified per sampled frame
        images0, cpu0, t0 = metric(port, "edge_infer_images_total"), tree_cpu_seconds(daemon.pid), time.monotonic()
        peak = 0.0
        while time.monotonic() - t0 < seconds:
            time.sleep(2)
            peak = max(peak, tree_pss_mb(daemon.pid))
        frames = (metric(port, "edge_infer_images_total") - images0) / per_frame
        cpu = tree_cpu_seconds(daemon.pid) - cpu0
        return {"frames": frames, "cpu_ms_per_frame": 1000 * cpu / max(frames, 1), "pss_peak_mb": peak,
                "fps": frames / (time.monotonic() - t0)}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--fps", type=float, default=5)
    ap.add_argument("--count", type=int, default=20, help="photos in the looping stream")
    ap.add_argument("--own-model", action="store_true",
                    help="the regions name their own model (a copy of the embedded one): one more session")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-infer-regions-") as tmp:
        work = Path(tmp)
        (work / "photos").mkdir()
        for p in sorted(args.images.glob("*.JPEG"))[:args.count]:
            shutil.copy(p, work / "photos" / p.name)
        own = None
        if args.own_model:
            from edge_infer.classifier.manifest import default_model_path

            shutil.copytree(default_model_path().parent, work / "own-model")
            own = work / "own-model" / "model.onnx"
        runs: dict[str, list[dict[str, float]]] = {"whole frame": [], "two regions": []}
        with start_rtsp_server(work / "photos", seconds_per_image=0.5, fps=25) as server:
            for i in range(args.rounds):
                order = [False, True] if i % 2 == 0 else [True, False]
                for regions in order:
                    r = run_once(work, server.url, regions, args.fps, args.seconds, own)
                    side = "two regions" if regions else "whole frame"
                    runs[side].append(r)
                    print(f"round {i + 1} {side:>12}: {r['frames']:.0f} frames ({r['fps']:.2f}/s), "
                          f"CPU {r['cpu_ms_per_frame']:.1f} ms/frame, tree PSS peak {r['pss_peak_mb']:.1f} MB",
                          flush=True)
        for side, rs in runs.items():
            print(f"best {side:>12}: CPU {min(r['cpu_ms_per_frame'] for r in rs):.1f} ms/frame, "
                  f"tree PSS peak {min(r['pss_peak_mb'] for r in rs):.1f} MB "
                  f"(median of runs {sorted(r['pss_peak_mb'] for r in rs)[len(rs) // 2]:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
