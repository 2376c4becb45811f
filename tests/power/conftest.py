from __future__ import annotations

import pytest

from tests.power.mount import Mount, unavailable


@pytest.fixture
def cutfs(tmp_path):
    """A cutfs mount of ``tmp_path/disk`` at ``tmp_path/mnt``; skipped where FUSE cannot run."""
    why = unavailable()
    if why:
        pytest.skip(f"cutfs: {why}")
    m = Mount(tmp_path / "disk", tmp_path / "mnt", log=tmp_path / "cutfs.log")
    m.start()
    yield m
    if m.proc is not None:
        m.unmount()
