#!/usr/bin/env python3
"""Commit latency of a burst of result JSON files, by commit design, alone and with another process
dirtying a few hundred MB of unsynced data on the same file system (a scanner filling the inbox, a
recorder on the same SD card).

    python bench/commit_latency.py --dir /var/tmp/commit-bench --sizes 2,8,20 --rounds 12

Designs, each committing N records (~600-byte JSON) so that a crash leaves each absent or whole:
  serial      fsync each temporary file, rename, fsync its folder, one record after the other (the
              one-record way, ``write_json_atomic``)
  syncfs      write every temporary file, syncfs, rename all, syncfs (the group commit before issue 15)
  fdatasync-t fdatasync every temporary file from 4 threads at once, rename all, fsync each folder
  sfr         sync_file_range(WRITE) on every temporary file (writeback started for all), then fdatasync
              each in turn, rename all, fsync each folder
  sfr-t       the same, the fdatasyncs from 4 threads at once
  sfr-1       ext4 only, not a portable order: sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER) on each, rename
              all, one fsync of the folder (whose journal commit carries the files' sizes too)
  shipped     ``edge_infer.sinks.durable.write_json_group`` as it is in this tree, with 4 threads

A record's latency is the time from the burst's start to the moment it is durable (the end of the group,
for the group designs). The designs are interleaved burst by burst in a shuffled order, so the machine's
drift spreads over all of them. With ``--writer`` on (the default runs both), a child process writes new
300 MB files in 1 MB chunks, never synced, unlinking the previous one (whose dirty pages are then
dropped, not written); each burst starts once /proc/meminfo's Dirty is at least ``--min-dirty-mb``.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_libc = ctypes.CDLL(None, use_errno=True)
_libc.sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SFR_WAIT_BEFORE, SFR_WRITE, SFR_WAIT_AFTER = 1, 2, 4
POOL = ThreadPoolExecutor(4)


def record(i: int) -> bytes:
    """A result as the daemon writes it (5 predictions, ~600 bytes)."""
    preds = [{"index": 100 + k, "label": f"label number {k}", "score": 0.1234} for k in range(5)]
    obj = {"source": "inbox", "input": f"IMG_{i:04d}.JPG", "input_sha256": "ab" * 32, "status": "ok",
           "predictions": preds, "model": {"name": "mobilenetv2", "sha256": "cd" * 32, "precision": "int8"},
           "image": {"width": 4032, "height": 3024},
           "timings_ms": {"queue": 1.234, "preprocess": 3.456, "inference": 4.567},
           "finished_at": "2026-12-02T05:00:00.000Z"}
    return (json.dumps(obj) + "\n").encode()


def _tmp(tmp_dir: Path, data: bytes) -> tuple[Path, int]:
    p = tmp_dir / f"{uuid.uuid4().hex}.tmp"
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    return p, fd


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)


def _sfr(fd: int, flags: int) -> None:
    if _libc.sync_file_range(fd, 0, 0, flags) != 0:
        raise OSError(ctypes.get_errno(), "sync_file_range")


def _syncfs(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    _libc.syncfs(fd)
    os.close(fd)


def commit(design: str, items: list[tuple[Path, bytes]], tmp_dir: Path) -> list[float]:
    """Commit ``items``; the monotonic time at which each became durable."""
    if design == "shipped":
        from edge_infer.sinks.durable import write_json_group

        write_json_group([(p, json.loads(d), tmp_dir.parent) for p, d in items], POOL)
        return [time.perf_counter()] * len(items)
    if design == "serial":
        out = []
        for path, data in items:
            tmp, fd = _tmp(tmp_dir, data)
            os.fsync(fd)
            os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
            out.append(time.perf_counter())
        return out
    staged = [(_tmp(tmp_dir, data), path) for path, data in items]
    fds = [fd for (_, fd), _ in staged]
    if design == "syncfs":
        _syncfs(tmp_dir)
    elif design == "fdatasync-t":
        list(POOL.map(os.fdatasync, fds))
    elif design == "sfr":
        for fd in fds:
            _sfr(fd, SFR_WRITE)
        for fd in fds:
            os.fdatasync(fd)
    elif design == "sfr-t":
        for fd in fds:
            _sfr(fd, SFR_WRITE)
        list(POOL.map(os.fdatasync, fds))
    elif design == "sfr-1":
        for fd in fds:
            _sfr(fd, SFR_WRITE)
        for fd in fds:
            _sfr(fd, SFR_WAIT_BEFORE | SFR_WRITE | SFR_WAIT_AFTER)
    for fd in fds:
        os.close(fd)
    for (tmp, _), path in staged:
        os.replace(tmp, path)
    if design == "syncfs":
        _syncfs(tmp_dir)
    else:
        for d in {path.parent for _, path in staged}:
            _fsync_dir(d)
    return [time.perf_counter()] * len(items)


def dirty_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Dirty:"):
                return int(line.split()[1]) / 1024
    return 0.0


def writer(folder: str, mb: int, mb_per_s: float) -> None:
    """New files of ``mb`` MB written 1 MB at a time, never synced; the previous one unlinked."""
    chunk = os.urandom(1 << 20)
    prev = None
    n = 0
    while True:
        path = os.path.join(folder, f"big{n % 2}.bin")
        n += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        if prev:
            os.unlink(prev)
        t0 = time.perf_counter()
        for i in range(mb):
            os.write(fd, chunk)
            lag = (i + 1) / mb_per_s - (time.perf_counter() - t0)
            if lag > 0:
                time.sleep(lag)
        os.close(fd)
        prev = path


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(args: argparse.Namespace, with_writer: bool, designs: list[str], sizes: list[int]) -> dict:
    base = Path(args.dir)
    results = base / "results"
    tmp_dir = results / ".writing"
    out_dir = results / "s"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (base / "other").mkdir(exist_ok=True)
    proc = None
    if with_writer:
        proc = multiprocessing.Process(target=writer, args=(str(base / "other"), args.writer_mb, args.writer_mb_s),
                                       daemon=True)
        proc.start()
    stats: dict = {(d, n): {"lat": [], "rate": [], "dirty": []} for d in designs for n in sizes}
    seq = 0
    try:
        for _ in range(args.rounds):
            order = [(d, n) for d in designs for n in sizes]
            random.shuffle(order)
            for d, n in order:
                deadline = time.monotonic() + 20
                while with_writer and dirty_mb() < args.min_dirty_mb and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(args.gap_s)
                items = []
                for _ in range(n):
                    seq += 1
                    items.append((out_dir / f"IMG_{seq:06d}.JPG.json", record(seq)))
                stats[(d, n)]["dirty"].append(dirty_mb())
                t0 = time.perf_counter()
                done = commit(d, items, tmp_dir)
                stats[(d, n)]["lat"] += [t - t0 for t in done]
                stats[(d, n)]["rate"].append(n / (done[-1] - t0))
            # Untimed: the records of this round removed and the removal made durable before the next.
            for p in out_dir.iterdir():
                p.unlink()
            _fsync_dir(out_dir)
    finally:
        if proc is not None:
            proc.kill()
            proc.join()
        for p in (base / "other").iterdir():
            p.unlink()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp/commit-bench", help="on the file system to measure (not tmpfs)")
    ap.add_argument("--sizes", default="2,8,20")
    ap.add_argument("--designs", default="serial,syncfs,fdatasync-t,sfr,sfr-t,sfr-1,shipped")
    ap.add_argument("--rounds", type=int, default=12, help="bursts of each design and size, per block")
    ap.add_argument("--blocks", type=int, default=2, help="alone / with the writer blocks, alternated")
    ap.add_argument("--writer-mb", type=int, default=300)
    ap.add_argument("--writer-mb-s", type=float, default=200.0)
    ap.add_argument("--min-dirty-mb", type=float, default=200.0)
    ap.add_argument("--gap-s", type=float, default=0.05)
    ap.add_argument("--mode", choices=("both", "alone", "writer"), default="both")
    args = ap.parse_args()
    designs, sizes = args.designs.split(","), [int(s) for s in args.sizes.split(",")]
    modes = {"both": [False, True], "alone": [False], "writer": [True]}[args.mode]
    blocks: dict = {}
    for b in range(args.blocks):
        for w in modes:
            s = run(args, w, designs, sizes)
            for key, v in s.items():
                blocks.setdefault((w, *key), []).append(v)
    print(f"per-result commit latency (ms) and results/s; {args.blocks} block(s) of {args.rounds} bursts each;"
          f" p50/p99 over all bursts, rate as median (best) of bursts, per block")
    print("| writer | design | N | p50 ms | p99 ms | results/s median (best) per block | Dirty MB at start |")
    print("|---|---|---|---|---|---|---|")
    for w in modes:
        for n in sizes:
            for d in designs:
                bl = blocks[(w, d, n)]
                lat = [x for v in bl for x in v["lat"]]
                rates = ", ".join(f"{statistics.median(v['rate']):.0f} ({max(v['rate']):.0f})" for v in bl)
                dirty = statistics.median(x for v in bl for x in v["dirty"])
                print(f"| {'300 MB' if w else 'none'} | {d} | {n} | {1000 * pct(lat, 0.5):.1f} | "
                      f"{1000 * pct(lat, 0.99):.1f} | {rates} | {dirty:.0f} |")


if __name__ == "__main__":
    main()
