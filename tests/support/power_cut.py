"""Writing, syncing and power-cycling files on a cutfs mount (tests/power/mount.py)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.power.mount import Mount


def fsync(path: Path, data_only: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        (os.fdatasync if data_only else os.fsync)(fd)
    finally:
        os.close(fd)


def write(path: Path, data: bytes, sync: bool = False) -> None:
    with open(path, "wb") as f:
        f.write(data)
        if sync:
            f.flush()
            os.fsync(f.fileno())


def power_cycle(m: Mount) -> dict[str, bytes | str]:
    """Cut (if not yet), let the disk come back, and read it: {relative path: bytes, or "dir"}."""
    m.cut()
    m.unmount()
    return {p.relative_to(m.disk).as_posix(): ("dir" if p.is_dir() else p.read_bytes())
            for p in sorted(m.disk.rglob("*"))}
