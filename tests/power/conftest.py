from __future__ import annotations

import pytest

from tests.support.ci import skip_unless_ci
from tests.power.mount import Mount, unavailable


@pytest.fixture
def fuse_ok() -> None:
    """Skip where FUSE cannot run (as root, /dev/fuse, libfuse3, mfusepy); in CI, fail instead."""
    why = unavailable()
    if why:
        skip_unless_ci(f"cutfs (the power-cut file system): {why}")


@pytest.fixture
def cutfs(tmp_path, fuse_ok):
    """A cutfs mount of ``tmp_path/disk`` at ``tmp_path/mnt``."""
    m = Mount(tmp_path / "disk", tmp_path / "mnt", log=tmp_path / "cutfs.log")
    m.start()
    yield m
    if m.proc is not None:
        m.unmount()
