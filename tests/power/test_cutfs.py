"""The power-cut file system itself: what survives a cut after each kind of sync, and what does not."""
from __future__ import annotations

import ctypes
import errno
import os

import pytest

from tests.support.power_cut import fsync, power_cycle, write


def test_unsynced_file_and_entry_are_gone_after_a_cut(cutfs):
    write(cutfs.mountpoint / "a.json", b"{}")
    assert power_cycle(cutfs) == {}


def test_fsync_of_a_file_keeps_its_data_not_its_name(cutfs):
    write(cutfs.mountpoint / "a.json", b"data", sync=True)
    assert power_cycle(cutfs) == {}  # its folder was never synced: the name is not durable


def test_fsync_of_the_folder_without_the_file_leaves_an_empty_file(cutfs):
    write(cutfs.mountpoint / "a.json", b"data")
    fsync(cutfs.mountpoint)
    assert power_cycle(cutfs) == {"a.json": b""}


@pytest.mark.parametrize("data_only", [False, True], ids=["fsync", "fdatasync"])
def test_file_then_folder_synced_survives_whole(cutfs, data_only):
    write(cutfs.mountpoint / "a.json", b"data")
    fsync(cutfs.mountpoint / "a.json", data_only)
    fsync(cutfs.mountpoint)
    assert power_cycle(cutfs) == {"a.json": b"data"}


def test_appends_and_overwrites_after_the_last_sync_are_lost(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "log", b"line 1\n", sync=True)
    write(mnt / "doc", b"version 1", sync=True)
    fsync(mnt)
    with open(mnt / "log", "ab") as f:
        f.write(b"line 2\n")
    with open(mnt / "doc", "r+b") as f:
        f.write(b"VERSION")
    with open(mnt / "log", "rb") as f:
        assert f.read() == b"line 1\nline 2\n"  # the running system sees its writes
    assert power_cycle(cutfs) == {"doc": b"version 1", "log": b"line 1\n"}


def test_truncation_after_the_last_sync_is_undone(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "a", b"0123456789", sync=True)
    fsync(mnt)
    write(mnt / "a", b"new")  # O_TRUNC
    assert power_cycle(cutfs) == {"a": b"0123456789"}


def test_a_new_folder_needs_its_parent_synced(cutfs):
    mnt = cutfs.mountpoint
    (mnt / "d").mkdir()
    write(mnt / "d" / "r.json", b"result", sync=True)
    fsync(mnt / "d")  # the folder's own entries, but not the folder's name in its parent
    assert power_cycle(cutfs) == {}


def test_a_new_folder_synced_into_its_parent_survives_with_what_was_synced_in_it(cutfs):
    mnt = cutfs.mountpoint
    (mnt / "d").mkdir()
    fsync(mnt)
    write(mnt / "d" / "r.json", b"result", sync=True)
    fsync(mnt / "d")
    assert power_cycle(cutfs) == {"d": "dir", "d/r.json": b"result"}


def test_a_rename_is_durable_in_both_folders_by_a_sync_of_either(cutfs):
    mnt = cutfs.mountpoint
    for d in ("inbox", "done", "other"):
        (mnt / d).mkdir()
    fsync(mnt)
    write(mnt / "inbox" / "a.jpg", b"photo a", sync=True)
    write(mnt / "inbox" / "b.jpg", b"photo b", sync=True)
    fsync(mnt / "inbox")
    os.rename(mnt / "inbox" / "a.jpg", mnt / "done" / "a.jpg")
    fsync(mnt / "done")  # moves a out of the inbox too, as a journal commits one rename
    os.rename(mnt / "inbox" / "b.jpg", mnt / "other" / "b.jpg")  # never synced: b stays where it was
    assert power_cycle(cutfs) == {"done": "dir", "done/a.jpg": b"photo a", "inbox": "dir",
                                  "inbox/b.jpg": b"photo b", "other": "dir"}


def test_a_rename_over_a_file_not_synced_brings_the_old_file_back(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "ack", b"old", sync=True)
    fsync(mnt)
    write(mnt / "ack.tmp", b"new", sync=True)
    os.replace(mnt / "ack.tmp", mnt / "ack")
    assert (mnt / "ack").read_bytes() == b"new"
    assert power_cycle(cutfs) == {"ack": b"old"}


def test_an_unlink_not_synced_brings_the_file_back_with_its_durable_content(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "in.jpg", b"photo", sync=True)
    fsync(mnt)
    (mnt / "in.jpg").unlink()
    assert power_cycle(cutfs) == {"in.jpg": b"photo"}


def test_an_unlink_synced_is_gone(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "in.jpg", b"photo", sync=True)
    fsync(mnt)
    (mnt / "in.jpg").unlink()
    fsync(mnt)
    assert power_cycle(cutfs) == {}


def test_a_hard_link_synced_survives_as_a_link(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "a", b"x", sync=True)
    os.link(mnt / "a", mnt / "b")
    fsync(mnt)
    after = power_cycle(cutfs)
    assert after == {"a": b"x", "b": b"x"}
    assert os.stat(cutfs.disk / "a").st_ino == os.stat(cutfs.disk / "b").st_ino


def test_rename_noreplace_reaches_the_file_system(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "a", b"a")
    write(mnt / "b", b"b")
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.renameat2(-100, bytes(mnt / "a"), -100, bytes(mnt / "b"), 1)  # RENAME_NOREPLACE
    assert rc == -1 and ctypes.get_errno() == errno.EEXIST
    assert (mnt / "b").read_bytes() == b"b"


def test_after_the_cut_every_operation_fails_and_nothing_reaches_the_disk(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "a", b"a", sync=True)
    fsync(mnt)
    cutfs.cut()
    with pytest.raises(OSError) as e:
        write(mnt / "b", b"b", sync=True)
    assert e.value.errno == errno.EIO
    cutfs.unmount()
    assert sorted(os.listdir(cutfs.disk)) == ["a"]


def test_a_clean_unmount_keeps_everything_and_the_disk_mounts_again(cutfs):
    mnt = cutfs.mountpoint
    (mnt / "d").mkdir()
    write(mnt / "d" / "a", b"never synced")
    cutfs.unmount()
    cutfs.start()
    assert (mnt / "d" / "a").read_bytes() == b"never synced"
    assert power_cycle(cutfs) == {"d": "dir", "d/a": b"never synced"}  # as found at mount: durable


def test_sync_command_makes_everything_durable(cutfs):
    mnt = cutfs.mountpoint
    (mnt / "d").mkdir()
    write(mnt / "d" / "a", b"x")
    assert cutfs.command("sync") == "ok"
    assert power_cycle(cutfs) == {"d": "dir", "d/a": b"x"}


def test_the_syncs_seen_are_counted(cutfs):
    mnt = cutfs.mountpoint
    write(mnt / "a", b"a")
    fsync(mnt / "a", data_only=True)
    fsync(mnt / "a")
    fsync(mnt)
    s = cutfs.stats()
    assert (s["fdatasync"], s["fsync"], s["fsyncdir"]) == (1, 1, 1)
