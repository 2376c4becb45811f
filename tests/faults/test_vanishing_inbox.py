"""The inbox itself deleted, or renamed away, while the daemon runs: the daemon waits for it to come
back (a gauge, one log line, a line in `edge-infer status`), stays alive, watches the new folder on
its own and processes what is dropped there, and stops within the shutdown deadline whether the
inbox is back or not."""
from __future__ import annotations

import shutil
import signal
import time

import pytest

from tests.support.cli import run_cli
from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.images import write_images
from tests.support.metrics import metric

MISSING = 'edge_infer_watch_folder_missing{source="drops"}'
OK = 'edge_infer_images_total{outcome="ok",source="drops"}'


def _start(tmp_path, polling: bool = False):  # type: ignore[no-untyped-def]
    port = free_port()
    source = {"name": "drops", "type": "folder", "path": "inbox", "after": "move",
              "done_dir": "done", "failed_dir": "failed", "polling": polling}
    cfg = write_config(tmp_path, [source], metrics={"port": port}, shutdown={"drain_timeout_s": 5})
    return port, cfg


@pytest.mark.parametrize("how", ["deleted", "renamed away", "deleted, polled"])
def test_an_inbox_that_vanishes_is_waited_for_and_watched_again_when_it_comes_back(tmp_path, how):
    port, cfg = _start(tmp_path, polling=how.endswith("polled"))
    photos = write_images(tmp_path / "staging", 2)
    inbox = tmp_path / "inbox"
    with daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        shutil.copy(photos[0], inbox / "first.jpg")
        wait_for(lambda: metric(port, OK) == 1, 30, "the first photo's result")
        if how.startswith("deleted"):
            shutil.rmtree(inbox)
        else:
            inbox.rename(tmp_path / "old-inbox")
        wait_for(lambda: metric(port, MISSING) == 1, 10, "the missing inbox reported")
        r = run_cli("status", "--url", f"http://127.0.0.1:{port}", "--interval", "0")
        assert "drops: FOLDER MISSING" in r.stdout, r.stdout
        time.sleep(1.5)  # a few supervisor ticks: waiting is not a death
        assert http_status(port, "/healthz") == 200
        inbox.mkdir()
        wait_for(lambda: metric(port, MISSING) == 0, 10, "the inbox seen back")
        shutil.copy(photos[1], inbox / "second.jpg")
        wait_for(lambda: metric(port, OK) == 2, 30, "the photo dropped into the new inbox")
        assert http_status(port, "/healthz") == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    log = (tmp_path / "daemon.log").read_text()
    assert log.count("is gone") == 1 and "waiting for it to come back" in log, log
    assert "Traceback" not in log, log


def test_sigterm_while_the_inbox_is_missing_stops_within_the_deadline(tmp_path):
    port, cfg = _start(tmp_path)
    with daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        shutil.rmtree(tmp_path / "inbox")
        # Whatever the daemon makes of it (before: a failed restart of the observer), once noticed.
        log = tmp_path / "daemon.log"
        noticed = ("is gone", "cannot restart stage")
        wait_for(lambda: any(s in log.read_text() for s in noticed), 10, "noticed")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5 + 5 + 5) == 0  # drain_timeout_s + the join margin, and some slack
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
