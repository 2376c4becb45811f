"""Events are hints: the periodic reconciliation scan (`sources[].rescan_interval_s`) finds the
files no event reported, offers them, and counts them, so a missed event shows up as a metric
rather than as a photo waiting forever. Files the source was told about are never counted.

The missed events are real: a file system mounted on a sub-folder of the inbox (a USB stick, a
network share) is invisible to the inotify watch on the folder underneath, so files written there
send nothing."""
from __future__ import annotations

import shutil

from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.images import write_images
from tests.support.metrics import metric

OK = 'edge_infer_images_total{outcome="ok",source="drops"}'
MISSED = 'edge_infer_watch_missed_total{source="drops"}'
RESCANS = 'edge_infer_watch_rescans_total{source="drops"}'


def test_files_no_event_reported_are_found_by_the_reconciliation_scan_and_counted(tmp_path, tmpfs):
    port = free_port()
    source = {"name": "drops", "type": "folder", "path": "inbox", "after": "move",
              "done_dir": "done", "failed_dir": "failed", "rescan_interval_s": 1}
    cfg = write_config(tmp_path, [source], metrics={"port": port})
    photos = write_images(tmp_path / "staging", 8)
    (tmp_path / "inbox" / "usb").mkdir(parents=True)  # a mount point, watched from the start
    with daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        for p in photos[:4]:  # told about by their events: processed, never counted as missed
            shutil.copy(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: metric(port, OK) == 4, 30, "the reported photos' results")
        scans = metric(port, RESCANS)
        wait_for(lambda: metric(port, RESCANS) >= scans + 2, 20, "two reconciliation scans")
        assert metric(port, MISSED) == 0
        usb = tmpfs("inbox/usb")  # mounted over the folder the daemon watches
        for p in photos[4:]:
            shutil.copy(p, usb / p.name)
        wait_for(lambda: metric(port, OK) == 8, 60, "the photos no event reported")
        assert metric(port, MISSED) == 4
        proc.terminate()
        assert proc.wait(30) == 0
    assert not files_under(tmp_path / "inbox")
