"""File systems under test: mounting (tmpfs, read-only remounts) and what a folder holds."""
from __future__ import annotations

import subprocess
from pathlib import Path


def run_mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)


def remount(target: Path, mode: str) -> None:
    """``mode`` is "ro" or "rw": a live file system turned read-only, or writable again."""
    r = run_mount("-o", f"remount,{mode}", str(target))
    assert r.returncode == 0, r.stderr


def files_under(base: Path) -> set[str]:
    """Relative paths of every non-directory entry under ``base`` (symlinks included, never followed)."""
    if not base.exists():
        return set()
    return {p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_symlink() or not p.is_dir()}


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
