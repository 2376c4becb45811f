"""One input the daemon can read but cannot move must not stop the others: it keeps its one record, is
parked where it is (counted, logged once, remembered across restarts), and completes once the obstacle is
gone; the photos dropped behind it all finish meanwhile, and /readyz stays 200.

The daemon is a real subprocess running as uid 65534, as the service does: root would move anything.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.conftest import skip_unless_ci, write_images
from tests.faults.conftest import files_under, metric
from tests.integration.daemon_util import ROOT, free_port, http_status, wait_for, waiting, write_config

DAEMON_UID = 65534
OTHER_UID = 1001  # "a group member": another user of the daemon's group
PHOTOS = 40


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder the daemon's user can reach (pytest's own tmp folders are root's alone)."""
    if os.geteuid() != 0:
        skip_unless_ci("needs root, to run the daemon as another user and to chattr")
    path = Path(tempfile.mkdtemp(prefix="edge-infer-stuck-", dir="/tmp"))
    path.chmod(0o755)
    for name in ("inbox", "done", "failed", "results"):
        (path / name).mkdir()
        os.chown(path / name, DAEMON_UID, DAEMON_UID)
    yield path
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, timeout=30)
    shutil.rmtree(path)


def _as_user(uid: int) -> dict:
    return {"user": uid, "group": uid, "extra_groups": [], "env": {
        **os.environ, "HOME": "/nonexistent",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *_site_packages()])}}


def _site_packages() -> list[str]:
    """This venv's packages, and those a .pth file in it adds (a venv layered over another's)."""
    return [*site.getsitepackages(), *(p for p in sys.path if p.endswith("site-packages"))]


@functools.lru_cache(maxsize=None)
def interpreter_for(uid: int) -> str:
    """This Python, or the same version elsewhere, that ``uid`` may run: a venv made from a Python under
    /root (pyenv) links to an interpreter that no other user can reach."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, os.path.realpath(sys.executable), f"/usr/bin/{version}",
                      f"/usr/local/bin/{version}"):
        try:
            r = subprocess.run([candidate, "-c", "import edge_infer.app"], capture_output=True, timeout=60,
                               cwd="/", **_as_user(uid))
        except OSError:
            continue
        if r.returncode == 0:
            return candidate
    skip_unless_ci(f"no {version} with the runtime's packages that uid {uid} may run")
    raise AssertionError("unreachable")


@contextmanager
def daemon_as(cfg: Path, log: Path, uid: int = DAEMON_UID) -> Iterator[subprocess.Popen]:
    """``edge-infer run`` as ``uid`` (and its group, nothing else: no capabilities), output appended to ``log``."""
    with open(log, "a") as out:
        proc = subprocess.Popen([interpreter_for(uid), "-m", "edge_infer", "run", "-c", str(cfg)], cwd="/",
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **_as_user(uid))
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


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


def _drop(base: Path, photos: list[Path]) -> None:
    for p in photos:
        tmp = base / "inbox" / f".{p.name}"
        shutil.copy(p, tmp)
        os.rename(tmp, base / "inbox" / p.name)


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
        _drop(base, photos[1:PHOTOS + 1])
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
        _drop(base, photos[PHOTOS + 1:])
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
    from tests.unit.test_workers_writer import _finished_jobs, make_writer

    job = _finished_jobs(tmp_path, 1)[0]
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
