#!/usr/bin/env python3
"""Does the daemon's memory and CPU per image stay flat over 20,000 folder inputs?

Drops the shared photos (JPEGs of all sizes, in rounds of `--round` files renamed in at once, each copy with
a distinct name) into a running daemon (`after: delete`) until `--images` results exist, and prints the
daemon's resident memory and CPU time per image after every 1,000. The check: RSS at the end within 10 MB
of RSS after the first 2,000 (warm-up: onnxruntime's arenas and Pillow's caches reach their size early).

    python bench/soak.py --photos ../shared/images/imagenet-samples --images 20000
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from edge_infer.classifier.manifest import default_model_path
from edge_infer.tools.bench_daemon import Daemon, DaemonSettings
from edge_infer.tools.procfs import proc_cpu_seconds, proc_rss_mb

ROOT = Path(__file__).resolve().parent.parent


def done(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return sum(float(line.rsplit(" ", 1)[1]) for line in r.read().decode().splitlines()
                   if line.startswith("edge_infer_images_total{"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--round", type=int, default=200, help="files renamed in at once")
    args = ap.parse_args()
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    with tempfile.TemporaryDirectory(prefix="edge-infer-soak-", dir=ROOT / "build" if (ROOT / "build").is_dir()
                                     else None) as tmp:
        work = Path(tmp)
        (work / "staging").mkdir()
        # The bench's daemon: default settings, a folder source at <work>/inbox with `after: delete`, started
        # and waited for until /readyz (the HTTP port answers before the inbox is armed).
        daemon = Daemon(work, default_model_path(), DaemonSettings())
        pid, port = daemon.proc.pid, daemon.port
        try:
            fed, t0, cpu0, marks = 0, time.monotonic(), proc_cpu_seconds(pid), []
            print(f"{'images':>7} {'RSS MB':>7} {'CPU ms/img':>10} {'img/s':>6}", flush=True)
            last_n, last_cpu, last_t = 0, cpu0, t0
            while fed < args.images:
                batch = []
                for i in range(min(args.round, args.images - fed)):
                    src = photos[(fed + i) % len(photos)]
                    dst = work / "staging" / f"{fed + i:06d}_{src.name}"
                    shutil.copy(src, dst)
                    batch.append(dst)
                for p in batch:
                    os.rename(p, work / "inbox" / p.name)
                fed += len(batch)
                while done(port) < fed:
                    time.sleep(0.05)
                if fed % 1000 == 0 or fed == args.images:
                    now_cpu, now_t = proc_cpu_seconds(pid), time.monotonic()
                    rss = proc_rss_mb(pid)
                    marks.append((fed, rss))
                    print(f"{fed:>7} {rss:>7.1f} {1000 * (now_cpu - last_cpu) / (fed - last_n):>10.2f} "
                          f"{(fed - last_n) / (now_t - last_t):>6.1f}", flush=True)
                    last_n, last_cpu, last_t = fed, now_cpu, now_t
            base = next(r for n, r in marks if n >= 2000) if any(n >= 2000 for n, _ in marks) else marks[0][1]
            growth = marks[-1][1] - base
            print(f"RSS after 2,000: {base:.1f} MB; after {fed:,}: {marks[-1][1]:.1f} MB ({growth:+.1f} MB); "
                  f"peak {max(r for _, r in marks):.1f} MB; {fed / (time.monotonic() - t0):.1f} img/s overall")
            return 0 if growth < 10 else 1
        finally:
            daemon.stop()


if __name__ == "__main__":
    sys.exit(main())
