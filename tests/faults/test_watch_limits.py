"""inotify's watch limit (fs.inotify.max_user_watches: one watch per folder, see inotify(7))
reached, at start or while the daemon runs: the source falls back to polling, with one error line
naming the sysctl, a gauge and a line in `edge-infer status`; the start never hangs and no photo is
left behind.

The limit is the real sysctl, lowered for as short a time as the test allows (other programs on the
machine use inotify too) and always restored. The daemon runs as uid 65534: the kernel counts
watches per user, so root's programs keep their own count meanwhile."""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.support.ci import skip_unless_ci
from tests.support.cli import run_cli
from tests.support.daemon import free_port, http_status, wait_for, write_config
from tests.support.images import write_images
from tests.support.metrics import metric
from tests.support.unprivileged import DAEMON_UID, daemon_as, stop

SYSCTL = Path("/proc/sys/fs/inotify/max_user_watches")
LIMIT = 500
FOLDERS = 3000
FALLBACK = 'edge_infer_watch_polling_fallback{source="drops"}'
OK = 'edge_infer_images_total{outcome="ok",source="drops"}'


@contextmanager
def watch_limit(n: int) -> Iterator[None]:
    """fs.inotify.max_user_watches at ``n`` for the duration, restored whatever happens."""
    old = SYSCTL.read_text()
    try:
        SYSCTL.write_text(str(n))
    except OSError as e:
        skip_unless_ci(f"needs to write {SYSCTL} (root, outside a container that forbids it): {e}")
    try:
        yield
    finally:
        SYSCTL.write_text(old)


def _folders(inbox: Path, photos: dict[int, Path]) -> None:
    """FOLDERS sub-folders the daemon owns, a photo in those named by ``photos``."""
    for i in range(FOLDERS):
        d = inbox / f"d{i:04d}"
        d.mkdir()
        os.chown(d, DAEMON_UID, DAEMON_UID)
        if i in photos:
            shutil.copy(photos[i], d / "photo.jpg")


def _config(base: Path, port: int) -> Path:
    source = {"name": "drops", "type": "folder", "path": str(base / "inbox"), "after": "move",
              "done_dir": str(base / "done"), "failed_dir": str(base / "failed")}
    return write_config(base, [source], output={"dir": str(base / "results")},
                        metrics={"port": port})


def _checks(base: Path, port: int, proc, photo: Path) -> None:  # type: ignore[no-untyped-def]
    """The two photos dropped before get their results, and so does one dropped now, deep in; the
    fall-back is in `status` and named in one log line."""
    wait_for(lambda: metric(port, OK) == 2, 60, "the photos dropped before")
    shutil.copy(photo, base / "inbox" / "d1500" / "later.jpg")
    wait_for(lambda: metric(port, OK) == 3, 30, "the photo dropped later")
    r = run_cli("status", "--url", f"http://127.0.0.1:{port}", "--interval", "0")
    assert "drops: polling (inotify ran out of watches" in r.stdout, r.stdout
    stop(proc)
    text = (base / "daemon.log").read_text()
    assert sum("fs.inotify.max_user_watches" in line for line in text.splitlines()) == 1, text
    assert text.count("Unable to watch") <= 1, text  # watchdog's own, for the first folder at most
    assert "Traceback" not in text, text


def test_too_many_folders_at_start_fall_back_to_polling_and_the_daemon_becomes_ready(
        base, tmp_path):
    photos = write_images(tmp_path / "staging", 3)
    _folders(base / "inbox", {0: photos[0], FOLDERS - 1: photos[1]})
    port = free_port()
    with daemon_as(_config(base, port), base / "daemon.log") as proc:
        with watch_limit(LIMIT):
            wait_for(lambda: http_status(port, "/readyz") == 200 or proc.poll() is not None, 30,
                     "ready or exited")
        assert proc.poll() is None and http_status(port, "/readyz") == 200
        assert metric(port, FALLBACK) == 1
        _checks(base, port, proc, photos[2])


def test_too_many_folders_created_while_running_fall_back_to_polling_and_lose_no_photo(
        base, tmp_path):
    photos = write_images(tmp_path / "staging", 3)
    port = free_port()
    with daemon_as(_config(base, port), base / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        with watch_limit(LIMIT):
            _folders(base / "inbox", {0: photos[0], FOLDERS - 1: photos[1]})
            wait_for(lambda: metric(port, FALLBACK) == 1, 20, "the fall-back to polling")
        _checks(base, port, proc, photos[2])
