"""Group commit on a real file system: it makes only its own files durable, in the crash-safe order."""
from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

import edge_infer.sinks.durable as durable
from tests.support.ci import skip_unless_ci


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]


def dirty_pages(path: Path) -> int:
    """The file's pages in the page cache not yet written back, from the kernel (cachestat(2), Linux 6.5)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        stat = _CacheStat()
        if libc.syscall(451, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(stat), 0) != 0:
            skip_unless_ci(f"needs cachestat(2) (Linux 6.5+): {os.strerror(ctypes.get_errno())}")
        return stat.dirty + stat.writeback
    finally:
        os.close(fd)


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A small ext4 of the test's own, loop-mounted: no other process's sync on the host's disks reaches it."""
    image, target = tmp_path / "fs.img", tmp_path / "fs"
    target.mkdir()
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    r = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True, timeout=60)
    if r.returncode == 0:
        r = subprocess.run(["mount", "-o", "loop", str(image), str(target)], capture_output=True, text=True,
                           timeout=60)
    if r.returncode != 0:
        skip_unless_ci(f"needs mkfs.ext4 and a loop mount (root): {r.stderr.strip()}")
    yield target
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=60)


def _records(root: Path, n: int, folders: int = 1) -> list[tuple[Path, dict, Path]]:
    return [(root / "results" / f"s{i % folders}" / f"IMG_{i:04d}.JPG.json", {"input": f"IMG_{i:04d}.JPG", "i": i},
             root / "results") for i in range(n)]


def test_a_group_commit_leaves_another_writers_unsynced_data_alone(ext4):
    # A scanner's fresh file on the same file system: syncfs would write all of it out with our records.
    other = ext4 / "inbox" / "scan.tiff"
    other.parent.mkdir()
    with open(other, "wb") as f:
        f.write(os.urandom(8 << 20))
    before = dirty_pages(other)
    assert before > 0
    records = _records(ext4, 10)
    with ThreadPoolExecutor(4) as pool:
        durable.write_json_group(records, pool)
    assert all(json.loads(p.read_text()) == obj for p, obj, _ in records)
    assert dirty_pages(other) == before  # still waiting for the kernel's writeback, none of it ours to flush
    assert all(dirty_pages(p) == 0 for p, _, _ in records)


@pytest.fixture(params=["serial", "threads"])
def pool(request) -> Iterator[ThreadPoolExecutor | None]:
    """Both ways the fdatasyncs are issued: in the caller's thread, or overlapping on the writer's threads."""
    if request.param == "serial":
        yield None
        return
    with ThreadPoolExecutor(4) as p:
        yield p


def test_each_record_is_synced_before_any_rename_and_each_folder_once_after_all(tmp_path, monkeypatch, pool):
    events: list[tuple[str, str]] = []
    real_fdatasync, real_fsync, real_replace = os.fdatasync, os.fsync, os.replace

    def name(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    monkeypatch.setattr(durable.os, "fdatasync", lambda fd: (events.append(("data", name(fd))), real_fdatasync(fd))[1])
    monkeypatch.setattr(durable.os, "fsync", lambda fd: (events.append(("fsync", name(fd))), real_fsync(fd))[1])
    monkeypatch.setattr(durable.os, "replace", lambda a, b: (events.append(("rename", str(b))), real_replace(a, b))[1])
    records = _records(tmp_path, 9, folders=3)
    durable.write_json_group(records, pool)
    # First the new folders, each fsynced into its parent (make_dirs); then the records.
    new_dirs = [p for k, p in events[:[k for k, _ in events].index("data")]]
    assert set(new_dirs) == {str(tmp_path), str(tmp_path / "results")}
    events = events[len(new_dirs):]
    kinds = [k for k, _ in events]
    assert kinds == ["data"] * 9 + ["rename"] * 9 + ["fsync"] * 3
    assert all(p.endswith(".tmp") and f"/{durable.TMP_DIR}/" in p for k, p in events if k == "data")
    assert {p for k, p in events if k == "fsync"} == {str(tmp_path / "results" / f"s{i}") for i in range(3)}
    assert all(json.loads(p.read_text()) == obj for p, obj, _ in records)
    assert not list((tmp_path / "results" / durable.TMP_DIR).iterdir())


def test_a_sync_that_fails_renames_nothing_and_leaves_no_temporary_file(tmp_path, monkeypatch, pool):
    real_fdatasync, calls = os.fdatasync, []

    def eio_on_the_third(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.EIO, "Input/output error")
        real_fdatasync(fd)

    monkeypatch.setattr(durable.os, "fdatasync", eio_on_the_third)
    records = _records(tmp_path, 5)
    with pytest.raises(OSError):
        durable.write_json_group(records, pool)
    assert not any(p.exists() for p, _, _ in records)  # none half-committed: each is absent, to be redone
    assert not list((tmp_path / "results" / durable.TMP_DIR).iterdir())
