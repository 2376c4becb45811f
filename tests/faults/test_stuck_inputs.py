"""One input the daemon can read but cannot move must not stop the others: it keeps its one record, is
parked where it is (counted, logged once, remembered across restarts), and completes once the obstacle is
gone; the photos dropped behind it all finish meanwhile, and /readyz stays 200.

The daemon is a real subprocess running as uid 65534, as the service does: root would move anything.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Callable

import pytest

from tests.support.ci import skip_unless_ci
from tests.support.daemon import free_port, http_status, wait_for, waiting, write_config
from tests.support.fs import files_under
from tests.support.images import write_images
from tests.support.metrics import metric
from tests.support.unprivileged import DAEMON_UID, daemon_as, drop_photos, stop

OTHER_UID = 1001  # "a group member": another user of the daemon's group
PHOTOS = 40


def chattr(flag: str, path: Path) -> None:
    r = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        skip_unless_ci(f"chattr {flag} needs a file system with attributes (ext4): {r.stderr.strip()}")


def _immutable(base: Path, photo: Path) -> tuple[str, Callable[[], None]]:
    target = base / "inbox" / "stuck.jpg"
    shutil.copyfile(photo, target)
    chattr("+i", target)
    return "stuck.jpg", lambda: chattr("-i", target)


def _foreign_subfolder(base: Path, photo: Path) -> tuple[str, Callable[[], None]]:
    sub = base / "inbox" / "theirs"
    sub.mkdir()
    shutil.copyfile(photo, sub / "stuck.jpg")
    os.chown(sub / "stuck.jpg", OTHER_UID, DAEMON_UID)
    os.chown(sub, OTHER_UID, DAEMON_UID)
    sub.chmod(0o755)  # the group may read, not write: the daemon cannot move anything out of it
    return "theirs/stuck.jpg", lambda: sub.chmod(0o775)


def _done_blocked(base: Path, photo: Path) -> tuple[str, Callable[[], None]]:
    (base / "inbox" / "sub").mkdir()
    os.chown(base / "inbox" / "sub", DAEMON_UID, DAEMON_UID)
    shutil.copyfile(photo, base / "inbox" / "sub" / "stuck.jpg")
    (base / "done" / "sub").write_text("a file where the folder done/sub must go")
    return "sub/stuck.jpg", lambda: (base / "done" / "sub").unlink()


STUCK = {"immutable": _immutable, "foreign_subfolder": _foreign_subfolder, "done_blocked": _done_blocked}


def _wait_all_done(base: Path, names: set[str], port: int, timeout: float) -> list[int]:
    """Wait until every name is in done/, reading /readyz at each look; the statuses seen."""
    seen: list[int] = []

    def done() -> bool:
        seen.append(http_status(port, "/readyz"))
        return names <= files_under(base / "done")

    wait_for(done, timeout, f"{len(names)} photos done")
    return seen


@pytest.mark.parametrize("kind", sorted(STUCK))
def test_a_stuck_input_is_parked_alone_and_completes_once_fixed(base, kind):
    port = free_port()
    cfg = write_config(base, metrics={"port": port})
    photos = write_images(base / "staging", PHOTOS + 2, seed=3)
    rel, fix = STUCK[kind](base, photos[0])
    record = base / "results" / "drops" / f"{rel}.json"
    log = base / "daemon.log"
    parked = 'edge_infer_inputs_parked{source="drops"}'

    with daemon_as(cfg, log) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        wait_for(record.exists, 60, "the stuck input's result")  # first in line: the photos come behind it
        drop_photos(base, photos[1:PHOTOS + 1])
        seen = _wait_all_done(base, {p.name for p in photos[1:PHOTOS + 1]}, port, 120)
        assert set(seen) == {200}, f"/readyz was not 200 all along: {sorted(set(seen))}"
        wait_for(lambda: metric(port, parked) == 1, 30, "the stuck input counted as parked")
        assert metric(port, 'edge_infer_images_total{outcome="failed",source="drops"}') == 0
        stop(proc)
    first = record.read_bytes()
    assert json.loads(first)["status"] == "ok"
    assert rel in waiting(base / "inbox") and not files_under(base / "failed")  # one record, no failure
    said = f"{rel!r} is parked"
    assert log.read_text().count(said) == 1, "the stuck input is logged once"

    # A restart (its start-up scan) skips it: not decoded again (it would count as a duplicate), no new log.
    with daemon_as(cfg, log) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready after a restart")
        drop_photos(base, photos[PHOTOS + 1:])
        wait_for(lambda: photos[-1].name in files_under(base / "done"), 60, "a photo after the restart")
        assert metric(port, parked) == 1
        assert metric(port, 'edge_infer_images_total{outcome="duplicate",source="drops"}') == 0
        assert metric(port, 'edge_infer_images_total{outcome="ok",source="drops"}') == 1
        assert log.read_text().count(said) == 1 and rel in waiting(base / "inbox")

        fix()  # the operator removes the obstacle: the input completes by itself, with the record it had
        wait_for(lambda: rel in files_under(base / "done"), 120, "the stuck input done once fixed")
        wait_for(lambda: metric(port, parked) == 0, 30, "nothing parked")
        assert http_status(port, "/readyz") == 200
        stop(proc)
    assert record.read_bytes() == first and not rel in waiting(base / "inbox")
    assert not files_under(base / "failed") and stat.S_ISREG((base / "done" / rel).stat().st_mode)


def test_an_input_that_cannot_leave_the_inbox_leaves_no_copy_in_a_done_folder_on_another_disk(tmp_path, tmpfs):
    """Across file systems a move is copy, fsync, unlink: an input that cannot be unlinked must not leave its
    copy behind at each retry (two inputs, one in the inbox and one in done/)."""
    from edge_infer.commit.writer import SourceRoute
    from tests.support.writer import finished_jobs, make_writer

    job = finished_jobs(tmp_path, 1)[0]
    writer, done = make_writer(tmp_path)
    other = tmpfs("done-elsewhere")
    r = writer._routes["s"]
    writer._routes["s"] = SourceRoute(r.after, other, r.failed_dir, r.on_done, tmp_path / "inbox")
    chattr("+i", job.path)
    try:
        writer.commit(job)
        assert done == [job] and writer.blocked_kind is None and job.path.exists()
        assert not files_under(other)
    finally:
        chattr("-i", job.path)
