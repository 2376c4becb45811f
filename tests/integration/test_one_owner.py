"""One owner per inbox, with real daemons: a second `edge-infer run` on the same inbox (a manual run
beside the service) refuses to start, exit 78, naming the inbox and the holder's pid; the lock dies
with its holder, so kill -9 never leaves it stale. Overlapping folders in one config are refused
before anything is written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.images import write_images
from tests.support.paths import ROOT

PHOTOS = 60


def _log_says(log: Path, text: str) -> bool:
    return log.exists() and text in log.read_text(errors="replace")


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edge_infer", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_second_daemon_on_the_same_config_exits_78_naming_the_inbox_and_the_holder(tmp_path):
    # metrics.port 0 (write_config's default): the second daemon is not stopped by a busy port, as a
    # manual run beside the service with its own port would not be.
    cfg = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    staging = tmp_path / "staging"
    photos = write_images(staging, PHOTOS)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with daemon(cfg, log=first_log) as first:
        wait_for(lambda: _log_says(first_log, "ready:"), 60, "the first daemon ready")
        with daemon(cfg, log=second_log) as second:
            started = time.monotonic()
            try:
                code = second.wait(20)
            except subprocess.TimeoutExpired:
                code = None
            said = second_log.read_text(errors="replace")
            assert code == 78, f"the second daemon did not refuse (exit {code}):\n{said}"
            assert time.monotonic() - started < 20
            assert str(inbox) in said and f"pid {first.pid}" in said, said
            assert "Traceback" not in said
        for p in photos:
            os.rename(p, inbox / p.name)
        wait_for(lambda: len(files_under(tmp_path / "done")) == PHOTOS, 120, "every photo done")
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
    assert files_under(tmp_path / "done") == {p.name for p in photos}
    assert not files_under(tmp_path / "failed") and not files_under(inbox)
    assert files_under(tmp_path / "results" / "drops") == {f"{p.name}.json" for p in photos}


def test_after_kill_9_of_the_owner_a_new_daemon_starts(tmp_path):
    port = free_port()  # fixed, as in a service config: the inbox is named, not the busy port
    cfg = write_config(tmp_path, metrics={"port": port})
    with daemon(cfg, log=tmp_path / "first.log") as first:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "the first daemon ready")
        r = _run_cli("run", "-c", str(cfg))
        assert r.returncode == 78 and f"pid {first.pid}" in r.stderr, r.stderr
        assert "sources[0].path" in r.stderr and str(tmp_path / "inbox") in r.stderr, r.stderr
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    photo = write_images(tmp_path / "staging", 1)[0]
    with daemon(cfg, log=tmp_path / "second.log") as second:
        wait_for(lambda: http_status(port, "/readyz") == 200 or second.poll() is not None, 60,
                 "the new daemon ready")
        assert second.poll() is None, (tmp_path / "second.log").read_text()
        os.rename(photo, tmp_path / "inbox" / photo.name)
        wait_for(lambda: files_under(tmp_path / "done") == {photo.name}, 60, "the photo done")
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0


def test_a_recursive_source_on_the_parent_of_another_daemons_inbox_is_refused(tmp_path):
    # Daemon B owns data/cam; daemon A would watch data recursively, data/cam included.
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    cfg_b = write_config(tmp_path / "b", sources=[_folder("cam", "../data/cam")])
    cfg_a = write_config(tmp_path / "a", sources=[_folder("all", "../data")])
    log_b = tmp_path / "b.log"
    with daemon(cfg_b, log=log_b) as b:
        wait_for(lambda: _log_says(log_b, "ready:"), 60, "daemon B ready")
        r = _run_cli("run", "-c", str(cfg_a))
        assert r.returncode == 78, r.stderr
        assert str(tmp_path / "data") in r.stderr and f"pid {b.pid}" in r.stderr, r.stderr
        b.send_signal(signal.SIGTERM)
        assert b.wait(30) == 0


def _config(tmp_path: Path, sources: list[dict], output: str = "results") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"sources": sources, "output": {"dir": output},
                                    "metrics": {"host": "127.0.0.1", "port": 0}}))
    return path


def _folder(name: str, path: str, **keys: object) -> dict:
    return {"name": name, "type": "folder", "path": path, "after": "move",
            "done_dir": f"{name}-done", "failed_dir": f"{name}-failed", **keys}


def test_check_config_refuses_two_sources_on_one_folder(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "alias").symlink_to("in")
    cfg = _config(tmp_path, [_folder("a", "in"), _folder("b", "alias")])
    r = _run_cli("check-config", "-c", str(cfg))
    assert r.returncode == 78, r.stdout + r.stderr
    assert "sources[1].path" in r.stderr and "sources[0].path" in r.stderr, r.stderr


def test_a_done_dir_resolving_into_the_inbox_is_refused_before_anything_loops(tmp_path):
    # done -> in/done: every input moved to done/ comes back into the recursive inbox, and again.
    # Before the check, 3 photos made 337 results nested 114 folders deep within 15 s here.
    inbox = tmp_path / "in"
    (inbox / "done").mkdir(parents=True)
    (tmp_path / "done").symlink_to(inbox / "done")
    photos = write_images(inbox, 3)
    cfg = _config(tmp_path, [_folder("a", "in", done_dir="done")])
    r = _run_cli("check-config", "-c", str(cfg))
    assert r.returncode == 78, r.stdout + r.stderr
    assert "sources[0].done_dir" in r.stderr and str(inbox) in r.stderr, r.stderr
    log = tmp_path / "run.log"
    with daemon(cfg, log=log) as proc:
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            code = None
    assert code == 78, log.read_text()[-3000:]
    assert "sources[0].done_dir" in log.read_text()
    assert files_under(inbox) == {p.name for p in photos}  # nothing moved
    assert not (tmp_path / "results").exists()  # nothing written
