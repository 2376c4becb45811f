"""The daemon as the service runs it: a real subprocess under uid 65534 (root would move anything);
and photos dropped where that user reads them."""
from __future__ import annotations

import functools
import os
import shutil
import signal
import site
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.support.ci import skip_unless_ci
from tests.support.paths import ROOT

DAEMON_UID = 65534


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


# Copied under a dot name, then renamed in: the daemon sees each photo whole.
def drop_photos(base: Path, photos: list[Path]) -> None:
    for p in photos:
        tmp = base / "inbox" / f".{p.name}"
        shutil.copy(p, tmp)
        os.rename(tmp, base / "inbox" / p.name)
