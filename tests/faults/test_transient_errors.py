"""A daemon out of file descriptors (EMFILE) for a while: the inputs that arrive meanwhile wait, and are
classified once descriptors come back; none becomes a failure record.

The daemon is a real subprocess; its RLIMIT_NOFILE is lowered from outside (prlimit) to the descriptors it
already holds, so that every open, socket or pipe it tries fails as it would on a machine that ran out.
"""
from __future__ import annotations

import os
import resource

from tests.support.ci import skip_unless_ci
from tests.support.daemon import free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.images import write_images
from tests.support.metrics import metric
from tests.support.unprivileged import daemon_as, drop_photos


def _lowest_free_fd(pid: int) -> int:
    held = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    return min(n for n in range(len(held) + 1) if n not in held)


def test_out_of_descriptors_the_inputs_wait_and_none_fails(tmp_path):
    if os.geteuid() != 0:
        skip_unless_ci("needs root, to lower another process's RLIMIT_NOFILE")
    port = free_port()
    cfg = write_config(tmp_path, metrics={"port": port})
    photos = write_images(tmp_path / "staging", 10, seed=5)
    (tmp_path / "inbox").mkdir()
    log = tmp_path / "daemon.log"
    with daemon_as(cfg, log, uid=0) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        limits = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)
        # No descriptor below the limit is free: each new one fails with EMFILE (those it holds still work).
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (_lowest_free_fd(proc.pid), limits[1]))
        try:
            drop_photos(tmp_path, photos)
            wait_for(lambda: "Too many open files" in log.read_text(), 30, "the daemon meeting EMFILE")
        finally:
            resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, limits)
        wait_for(lambda: files_under(tmp_path / "done") == {p.name for p in photos}, 60, "every photo done")
        assert metric(port, 'edge_infer_images_total{outcome="failed",source="drops"}') == 0
        assert metric(port, 'edge_infer_images_total{outcome="ok",source="drops"}') == len(photos)
        wait_for(lambda: http_status(port, "/readyz") == 200, 30, "ready again")
    assert not files_under(tmp_path / "failed") and not files_under(tmp_path / "inbox")
