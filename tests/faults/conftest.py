"""Fault-injection fixtures: small tmpfs mounts (a disk that fills up, goes read-only, or is another file
system), mounted by the test and unmounted after it. Mounting needs root (CAP_SYS_ADMIN): CI has it.
``base``: a folder the daemon running as uid 65534 (tests.support.unprivileged) may reach."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.support.ci import skip_unless_ci
from tests.support.fs import run_mount
from tests.support.unprivileged import DAEMON_UID


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(name, size="16m")`` mounts a tmpfs of that size at ``tmp_path/name`` and returns it."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "16m") -> Path:
        target = tmp_path / name
        target.mkdir(parents=True, exist_ok=True)
        r = run_mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target))
        if r.returncode != 0:
            skip_unless_ci(f"needs to mount a tmpfs (root with CAP_SYS_ADMIN): {r.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


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
