"""What the power cuts found, each on cutfs alone: acknowledgements and the MQTT spool's ack, which nothing
synced, were taken back by nearly every cut (inputs back in the inbox, results resent). A lagging one loses
nothing, but it must lag by at most about a second, not by everything since the last sync by chance."""
from __future__ import annotations

import os

from edge_infer.commit.ack_sync import AckSync
from edge_infer.sinks.spool import Spool
from tests.support.power_cut import fsync, power_cycle, write


def test_acknowledgements_flushed_survive_a_cut_and_unflushed_ones_come_back(cutfs):
    mnt = cutfs.mountpoint
    for d in ("inbox", "done"):
        (mnt / d).mkdir()
    fsync(mnt)
    for name in ("a.jpg", "b.jpg"):
        write(mnt / "inbox" / name, name.encode(), sync=True)
    fsync(mnt / "inbox")
    acks = AckSync(interval_s=3600)
    os.rename(mnt / "inbox" / "a.jpg", mnt / "done" / "a.jpg")
    acks.acknowledged(mnt / "inbox" / "a.jpg", mnt / "done" / "a.jpg")
    acks.flush()  # not due yet: nothing synced
    os.rename(mnt / "inbox" / "b.jpg", mnt / "done" / "b.jpg")
    acks.acknowledged(mnt / "inbox" / "b.jpg", mnt / "done" / "b.jpg")
    assert cutfs.stats()["fsyncdir"] == 2
    acks.flush(force=True)  # a clean stop, or a second later
    assert cutfs.stats()["fsyncdir"] == 4  # done/ first, then the inbox: each folder once
    os.unlink(mnt / "done" / "a.jpg")  # someone else's unsynced change: still taken back
    after = power_cycle(cutfs)
    assert after == {"done": "dir", "done/a.jpg": b"a.jpg", "done/b.jpg": b"b.jpg", "inbox": "dir"}


def test_acknowledgements_never_flushed_are_taken_back_by_a_cut(cutfs):
    mnt = cutfs.mountpoint
    for d in ("inbox", "done"):
        (mnt / d).mkdir()
    fsync(mnt)
    write(mnt / "inbox" / "a.jpg", b"a", sync=True)
    fsync(mnt / "inbox")
    os.rename(mnt / "inbox" / "a.jpg", mnt / "done" / "a.jpg")
    AckSync().acknowledged(mnt / "inbox" / "a.jpg", mnt / "done" / "a.jpg")  # and the power goes
    assert power_cycle(cutfs) == {"done": "dir", "inbox": "dir", "inbox/a.jpg": b"a"}


def test_the_spools_ack_survives_a_cut_so_nothing_acknowledged_is_resent(cutfs):
    folder = cutfs.mountpoint / "spool"
    spool = Spool(folder, 1 << 20, ack_flush_s=0.0)
    for i in range(5):
        spool.append(f"result {i}".encode())  # seq i
    for seq in range(3):
        spool.acknowledge(seq)
    spool.flush_ack()
    cutfs.cut()
    spool._close_fd()  # the process dies with the power: its descriptors close, nothing more is written
    power_cycle(cutfs)
    cutfs.start()
    again = Spool(folder, 1 << 20)
    assert again.ack == 3 and [p for _, p in again.read(0, 10)] == [b"result 3", b"result 4"]
