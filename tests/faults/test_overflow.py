"""A burst of files far beyond the kernel's inotify queue (fs.inotify.max_queued_events, 16384 by default):
the overflow is noticed, counted, and a rescan finds every file whose event the kernel dropped.

The overflow is made real and certain without touching the machine-wide limit (lowering it would shrink
the queue of every inotify instance created meanwhile, other programs' included): the daemon is stopped
with SIGSTOP while 20,000 files arrive, so its reader cannot keep up, then continued with SIGCONT."""
from __future__ import annotations

import os
import signal

from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.metrics import metric

N = 20_000


def test_20000_files_overflow_the_inotify_queue_and_a_rescan_finds_every_one(tmp_path, tmpfs):
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        assert N > int(f.read()), "the burst must exceed the kernel's queue"
    fs = tmpfs("fs", "1g")  # no fsync cost: the test is about events, not the disk
    port = free_port()
    cfg = write_config(tmp_path, [{"name": "drops", "type": "folder", "path": str(fs / "inbox"), "after": "delete",
                                   "failed_dir": str(fs / "failed")}],
                       output={"dir": str(fs / "results")}, metrics={"port": port},
                       batch={"max_size": 32}, pipeline={"queue_size": 256})
    # Tiny files that are not images: each is one real input that must end with a failure record, at a
    # fraction of an inference's cost.
    with daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            inbox = fs / "inbox"
            for i in range(N):
                (inbox / f"f{i:05d}.jpg").write_bytes(b"x")
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: metric(port, 'edge_infer_watch_overflows_total{source="drops"}') >= 1, 60,
                 "the overflow counted")
        wait_for(lambda: metric(port, 'edge_infer_images_total{outcome="failed",source="drops"}') == N, 240,
                 f"{N} failure records")
        assert not files_under(fs / "inbox")
    records = {r for r in files_under(fs / "failed") if r.endswith(".error.json")}
    assert len(records) == N
    assert "inotify event queue overflowed" in (tmp_path / "daemon.log").read_text()
