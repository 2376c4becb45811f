"""An input that takes the daemon itself down: in flight at two deaths in a row, it is quarantined at the
third start (failed as ``crashed`` without being decoded again); one death of bad luck quarantines nothing.

The daemon is a real subprocess and dies by a real SIGKILL, sent to itself as it starts on the input named
by the fault-injection hook (``EDGE_INFER_FAULTS``), which is off in every other test and in production.
"""
from __future__ import annotations

import json
import os

from tests.support.daemon import daemon, free_port, http_status, wait_for, waiting, write_config
from tests.support.images import write_images

CRASH = {"EDGE_INFER_FAULTS": "crash_daemon_on=poison"}


def _setup(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, metrics={"port": port}, pipeline={"workers": 1})
    photos = write_images(tmp_path / "staging", 4)
    (tmp_path / "inbox").mkdir()
    return port, cfg, photos


def _start_and_die(cfg, tmp_path, port) -> None:
    with daemon(cfg, env_extra=CRASH, log=tmp_path / "daemon.log") as proc:
        assert proc.wait(60) == -9, "the daemon did not die on the poison input"


def test_an_input_in_flight_at_two_deaths_in_a_row_is_quarantined_at_the_third_start(tmp_path):
    port, cfg, photos = _setup(tmp_path)
    os.rename(photos[0], tmp_path / "inbox" / "poison.jpg")
    _start_and_die(cfg, tmp_path, port)
    _start_and_die(cfg, tmp_path, port)  # the same input, first in line again: the same death
    for p in photos[1:]:
        os.rename(p, tmp_path / "inbox" / p.name)
    with daemon(cfg, env_extra=CRASH, log=tmp_path / "daemon.log"):  # the hook is still on: not reached
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        wait_for(lambda: len(list((tmp_path / "done").glob("*.jpg"))) == 3, 60, "the other photos")
        record = tmp_path / "failed" / "poison.jpg.error.json"
        wait_for(record.exists, 30, "poison's record")
    err = json.loads(record.read_text())["error"]
    assert err["kind"] == "crashed" and "2 crashes of the daemon in a row" in err["message"]
    assert (tmp_path / "failed" / "poison.jpg").exists() and not waiting(tmp_path / "inbox")
    assert "quarantined" in (tmp_path / "daemon.log").read_text()


def test_one_death_quarantines_nothing(tmp_path):
    port, cfg, photos = _setup(tmp_path)
    os.rename(photos[0], tmp_path / "inbox" / "poison.jpg")
    _start_and_die(cfg, tmp_path, port)
    with daemon(cfg, log=tmp_path / "daemon.log"):  # the cause is gone: it decodes as any photo
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        wait_for(lambda: (tmp_path / "done" / "poison.jpg").exists(), 60, "poison done")
    result = json.loads((tmp_path / "results" / "drops" / "poison.jpg.json").read_text())
    assert result["status"] == "ok"
    assert not (tmp_path / "failed").exists() or not list((tmp_path / "failed").iterdir())
