"""Fault-injection fixtures: small tmpfs mounts (a disk that fills up, goes read-only, or is another file
system), mounted by the test and unmounted after it. Mounting needs root (CAP_SYS_ADMIN): CI has it."""
from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.conftest import skip_unless_ci
from tests.integration.conftest import notify_socket  # noqa: F401 - shared with the integration tests


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(name, size="16m")`` mounts a tmpfs of that size at ``tmp_path/name`` and returns it."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "16m") -> Path:
        target = tmp_path / name
        target.mkdir(parents=True, exist_ok=True)
        r = _mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(target))
        if r.returncode != 0:
            skip_unless_ci(f"needs to mount a tmpfs (root with CAP_SYS_ADMIN): {r.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


def remount(target: Path, mode: str) -> None:
    """``mode`` is "ro" or "rw": a live file system turned read-only, or writable again."""
    r = _mount("-o", f"remount,{mode}", str(target))
    assert r.returncode == 0, r.stderr


def fill(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to the last byte."""
    filler = folder / "filler"
    # Unbuffered: a buffered file would try its last block again at close, and raise there.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def files_under(base: Path) -> set[str]:
    """Relative paths of every non-directory entry under ``base`` (symlinks included, never followed)."""
    if not base.exists():
        return set()
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_symlink() or not p.is_dir()}


def metric(port: int, sample: str) -> float:
    """One sample, as written in the text format (labels sorted), from a daemon's /metrics; 0 if absent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        m = re.search(rf"^{re.escape(sample)} (\S+)$", r.read().decode(), re.M)
    return float(m.group(1)) if m else 0.0
