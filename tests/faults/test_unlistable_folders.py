"""A sub-folder of the inbox the daemon may not list (another user's, mode 0700) is named once in
the log, counted in a gauge and in `edge-infer status`, and tried again at every reconciliation
scan, so that its photos get their results once it is opened to the daemon: never skipped in
silence.

The daemon is a real subprocess running as uid 65534, as the service does: root lists anything."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.support.cli import run_cli
from tests.support.daemon import free_port, http_status, wait_for, write_config
from tests.support.images import write_images
from tests.support.metrics import metric
from tests.support.unprivileged import DAEMON_UID, daemon_as, stop

UNLISTABLE = 'edge_infer_watch_unlistable_folders{source="drops"}'
OK = 'edge_infer_images_total{outcome="ok",source="drops"}'
MISSED = 'edge_infer_watch_missed_total{source="drops"}'
RESCANS = 'edge_infer_watch_rescans_total{source="drops"}'


def _locked(folder: Path, photo: Path) -> None:
    """A folder root keeps to itself (0700), a photo in it."""
    folder.mkdir()
    shutil.copy(photo, folder / "inside.jpg")
    folder.chmod(0o700)


def _open_to_daemon(folder: Path) -> None:
    for p in (folder, *folder.iterdir()):
        os.chown(p, DAEMON_UID, DAEMON_UID)


def test_a_folder_the_daemon_may_not_list_is_named_once_counted_and_processed_once_it_can_be(
        base, tmp_path):
    photos = write_images(tmp_path / "staging", 4)
    port = free_port()
    source = {"name": "drops", "type": "folder", "path": str(base / "inbox"), "after": "move",
              "done_dir": str(base / "done"), "failed_dir": str(base / "failed"),
              "rescan_interval_s": 1}
    cfg = write_config(base, [source], output={"dir": str(base / "results")},
                       metrics={"port": port})
    _locked(base / "inbox" / "locked", photos[0])
    shutil.copy(photos[1], base / "inbox" / "open.jpg")
    log = base / "daemon.log"
    with daemon_as(cfg, log) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        wait_for(lambda: metric(port, OK) == 1, 30, "the listable photo's result")
        wait_for(lambda: metric(port, UNLISTABLE) == 1, 10, "the folder it cannot list counted")
        # One that arrives while the daemon runs (made elsewhere, moved in whole).
        _locked(base / "later", photos[2])
        (base / "later").rename(base / "inbox" / "later")
        wait_for(lambda: metric(port, UNLISTABLE) == 2, 10, "the second one counted")
        rescans = metric(port, RESCANS)
        wait_for(lambda: metric(port, RESCANS) >= rescans + 3, 30, "three more scans")
        lines = log.read_text().splitlines()
        for name in ("locked", "later"):
            named = [line for line in lines if f"inbox/{name}" in line and "cannot list" in line]
            assert len(named) == 1, lines
        r = run_cli("status", "--url", f"http://127.0.0.1:{port}", "--interval", "0")
        assert "drops: 2 folder(s) it cannot list" in r.stdout, r.stdout
        assert metric(port, OK) == 1 and http_status(port, "/readyz") == 200
        _open_to_daemon(base / "inbox" / "locked")
        _open_to_daemon(base / "inbox" / "later")
        wait_for(lambda: metric(port, OK) == 3, 30, "their photos, once they can be listed")
        assert metric(port, UNLISTABLE) == 0 and metric(port, MISSED) == 2
        shutil.copy(photos[3], base / "inbox" / "locked" / "after.jpg")
        wait_for(lambda: metric(port, OK) == 4, 30, "a photo dropped there afterwards")
        stop(proc)
    assert not [p for p in (base / "inbox").rglob("*") if p.is_file()]
    assert "Traceback" not in log.read_text()
