"""`edge-infer status` against a real running daemon, and against nothing."""
from __future__ import annotations

import re
import shutil

from tests.support.cli import run_cli
from tests.support.daemon import RunningApp, free_port, wait_for, write_config
from tests.support.images import write_images


def test_status_shows_a_running_daemon(tmp_path, pyav):
    port = free_port()
    sources = [{"name": "drops", "type": "folder", "path": "inbox", "after": "move", "done_dir": "done",
                "failed_dir": "failed"},
               {"name": "nodev", "type": "camera", "url": "/dev/video63", "fps": 2, "reconnect_min_s": 0.2,
                "reconnect_max_s": 1}]
    cfg = write_config(tmp_path, sources, metrics={"port": port})
    with RunningApp(cfg) as run:
        write_images(tmp_path / "staging", 5)
        (tmp_path / "staging" / "broken.jpg").write_bytes(b"not an image")
        for p in sorted((tmp_path / "staging").iterdir()):
            shutil.move(str(p), tmp_path / "inbox" / p.name)
        wait_for(lambda: run.sample("edge_infer_images_total", source="drops", outcome="ok") == 5
                 and run.sample("edge_infer_images_total", source="drops", outcome="failed") == 1, 60, "results")
        wait_for(lambda: run.sample("edge_infer_camera_reconnects_total", source="nodev") >= 1, 30, "a reconnect")
        r = run_cli("status", "-c", str(cfg), "--interval", "0.5")  # the URL comes from the config's port
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"edge-infer at http://127.0.0.1:{port}" in out
    assert "health      alive, ready" in out
    assert re.search(r"uptime      \d[\ddhms ]* \(since 20\d\d-", out)  # the test process's uptime
    assert re.search(r"model       mobilenet_v2 int8 sha256 [0-9a-f]{12}\n", out)
    assert "queue       0 waiting, 0 in flight" in out
    assert re.search(r"memory      \d+\.\d MB resident of \d+\.\d GB \(\d+%\), CPU \d+% of a core", out)
    assert re.search(r"last error  drops: decode, \d+s ago", out)
    # source  ok  failed  duplicate  rate/s  last ok
    assert re.search(r"\n  drops\s+5\s+1\s+0\s+\d+\.\d\d\s+\d+s ago\n", out), out
    assert re.search(r"\n  nodev\s+0\s+0\s+0\s+0\.00\s+never\n", out), out
    assert re.search(r"\n  nodev\s+DOWN\s+[1-9]\d*\s+0\s+0\n", out), out


def test_status_without_a_daemon_exits_1_and_says_so(tmp_path):
    port = free_port()  # nothing listens there
    r = run_cli("status", "--url", f"http://127.0.0.1:{port}", "--interval", "0")
    assert r.returncode == 1
    assert r.stdout == ""
    assert f"cannot read the daemon's metrics at http://127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr


def test_status_refuses_a_negative_interval():
    r = run_cli("status", "--interval", "-1")
    assert r.returncode == 78 and "--interval: must be >= 0" in r.stderr
