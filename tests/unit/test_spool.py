"""The MQTT spool: order, bound, reopen, torn tails, and a real kill -9 in the middle of appends."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from edge_infer.sinks.spool import Spool, SpoolFull
from tests.support.paths import ROOT


def msg(i: int, size: int = 100) -> bytes:
    return f"{i:06d}".encode().ljust(size, b".")


def drain(spool: Spool) -> list[bytes]:
    """Read and acknowledge everything, in order."""
    got: list[bytes] = []
    for _ in range(10_000):  # bounded: a spool that keeps handing out acknowledged records fails, not hangs
        records = spool.read(0, 7)
        if not records:
            return got
        for seq, payload in records:
            got.append(payload)
            spool.acknowledge(seq)
    raise AssertionError(f"the spool never ran dry ({len(got)} records read, acknowledged up to {spool.ack})")


def test_records_come_back_in_order_and_acknowledged_ones_never_again(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    for i in range(50):
        s.append(msg(i))
    first = s.read(0, 10)
    assert [p for _, p in first] == [msg(i) for i in range(10)]
    for seq, _ in first:
        s.acknowledge(seq)
    assert s.pending == 40
    assert [p for _, p in s.read(0, 100)] == [msg(i) for i in range(10, 50)]
    s.close()
    s = Spool(tmp_path, 1 << 20)  # reopened: the acknowledged ten stay gone
    assert drain(s) == [msg(i) for i in range(10, 50)]
    assert s.pending == 0
    s.close()


def test_an_acknowledgement_out_of_order_waits_for_the_earlier_ones(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    for i in range(3):
        s.append(msg(i))
    s.acknowledge(1)
    s.acknowledge(2)
    assert s.pending == 3  # 0 is still unacknowledged, so nothing can go
    s.acknowledge(0)
    assert s.pending == 0
    s.close()


def test_segments_of_delivered_records_are_deleted(tmp_path):
    s = Spool(tmp_path, 64 * 1024)  # 8 KiB segments
    for i in range(400):
        s.append(msg(i), durable=False)
    assert len(list(tmp_path.glob("seg-*"))) > 3
    assert len(drain(s)) == 400
    assert len(list(tmp_path.glob("seg-*"))) == 1  # only the one being written
    s.close()
    s = Spool(tmp_path, 64 * 1024)
    assert list(tmp_path.glob("seg-*")) == [] and s.pending == 0
    s.append(msg(400))
    assert s.read(0, 5)[0][0] == 400  # sequence numbers go on from where they were
    s.close()


@pytest.mark.parametrize("tail", [b"\x10\x00", b"\x40\x00\x00\x00\x12\x34\x56\x78half a rec", b"\x00" * 64,
                                  b"\x05\x00\x00\x00\x00\x00\x00\x00hello"])
def test_a_torn_tail_is_cut_at_open_and_the_whole_records_kept(tmp_path, tail):
    s = Spool(tmp_path, 1 << 20)
    for i in range(5):
        s.append(msg(i))
    s.close()
    seg = next(tmp_path.glob("seg-*"))
    whole = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(tail)  # a write cut by a crash or power loss (the last one with a wrong CRC)
    s = Spool(tmp_path, 1 << 20)
    assert seg.stat().st_size == whole
    s.append(msg(5))
    assert drain(s) == [msg(i) for i in range(6)]
    s.close()


def test_a_lost_ack_file_resends_but_never_skips(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    for i in range(10):
        s.append(msg(i))
    for seq, _ in s.read(0, 4):
        s.acknowledge(seq)
    s.close()
    (tmp_path / "ack").unlink()
    s = Spool(tmp_path, 1 << 20)
    assert drain(s) == [msg(i) for i in range(10)]  # duplicates of 0..3 (QoS 1 allows), nothing missing
    s.close()


def test_block_refuses_when_full_and_accepts_again_once_delivered(tmp_path):
    s = Spool(tmp_path, 64 * 1024, on_full="block")
    n = 0
    with pytest.raises(SpoolFull):
        while True:
            s.append(msg(n, 500), durable=False)
            n += 1
    assert s.disk_bytes <= 64 * 1024 and n > 100
    assert [p for _, p in s.read(0, n + 5)] == [msg(i, 500) for i in range(n)]  # the refused one was not added
    drain(s)
    s.append(msg(n, 500))
    assert drain(s) == [msg(n, 500)]
    s.close()


def test_drop_oldest_keeps_the_bound_keeps_the_newest_in_order_and_counts(tmp_path):
    s = Spool(tmp_path, 64 * 1024, on_full="drop_oldest")
    dropped = sum(s.append(msg(i, 500), durable=False) for i in range(1000))
    assert s.disk_bytes <= 64 * 1024
    got = drain(s)
    assert dropped == s.dropped == 1000 - len(got) > 0
    assert got == [msg(i, 500) for i in range(1000 - len(got), 1000)]
    s.close()


def test_a_record_larger_than_a_segment_gets_one_to_itself_and_one_larger_than_the_spool_is_refused(tmp_path):
    s = Spool(tmp_path, 64 * 1024)
    big = b"x" * (s.segment_bytes * 2)
    s.append(msg(0))
    s.append(big)
    s.append(msg(1))
    assert drain(s) == [msg(0), big, msg(1)]
    with pytest.raises(ValueError):
        s.append(b"x" * (64 * 1024))
    s.close()


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from edge_infer.sinks.spool import Spool
    s = Spool(Path(sys.argv[1]), 1 << 24)
    i = 0
    while True:
        s.append(f"{i:06d}".encode().ljust(300, b"."))
        print(i, flush=True)  # only after append returned: this one is durable
        i += 1
""")


def test_kill_9_while_appending_loses_nothing_already_spooled(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        done = [int(proc.stdout.readline()) for _ in range(200)]  # a few hundred appends in, mid-stream
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    s = Spool(tmp_path, 1 << 24)
    got = [int(p[:6]) for p in drain(s)]
    assert got[:len(done)] == done  # every confirmed append, in order...
    assert got == list(range(len(got)))  # ...and whatever followed is whole and in order too
    s.close()


def ten_records(tmp_path):
    """A closed spool of ten 100-byte records in one segment, and (the segment, one record's size on disk)."""
    s = Spool(tmp_path, 1 << 20)
    for i in range(10):
        s.append(msg(i))
    s.close()
    (seg,) = tmp_path.glob("seg-*")
    return seg, seg.stat().st_size // 10


def overwrite(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("where", ["payload", "header"])
def test_a_corrupt_record_mid_segment_is_skipped_and_the_records_after_it_are_kept(tmp_path, where):
    seg, size = ten_records(tmp_path)
    # A bit flip in record 4's payload, or garbage over its header (its length no longer says where 5 starts).
    overwrite(seg, 4 * size + (size - 30 if where == "payload" else 0), b"\xaa" * 8)
    s = Spool(tmp_path, 1 << 20)
    assert drain(s) == [msg(i) for i in range(10) if i != 4]
    assert s.pending == 0  # the lost one is not waited for
    assert s.corrupt == 1
    s.append(msg(10))
    assert drain(s) == [msg(10)]
    s.close()
    s = Spool(tmp_path, 1 << 20)  # reopened: nothing found corrupt again, nothing sent again
    assert s.corrupt == 0 and s.pending == 0
    s.close()


def test_a_zeroed_stretch_mid_segment_costs_only_the_records_it_covers(tmp_path):
    """A power cut can leave a later page of a file written and an earlier one not: zeros in the middle."""
    seg, size = ten_records(tmp_path)
    overwrite(seg, 3 * size + 10, b"\x00" * (2 * size))  # from inside record 3 to inside record 5
    s = Spool(tmp_path, 1 << 20)
    assert [p for _, p in s.read(0, 20)] == [msg(i) for i in (0, 1, 2, 6, 7, 8, 9)]
    assert s.corrupt == 3
    for seq, _ in s.read(0, 2):
        s.acknowledge(seq)
    s.close()
    s = Spool(tmp_path, 1 << 20)  # the acknowledgements and the skipped stretch both hold after a reopen
    assert drain(s) == [msg(i) for i in (2, 6, 7, 8, 9)] and s.pending == 0
    s.close()


def test_a_corrupt_last_record_of_an_older_segment_is_counted_and_the_next_segments_kept(tmp_path):
    s = Spool(tmp_path, 64 * 1024)  # 8 KiB segments
    for i in range(200):
        s.append(msg(i), durable=False)
    s.close()
    first, second = sorted(tmp_path.glob("seg-*"))[:2]
    overwrite(first, first.stat().st_size - 20, b"\xaa" * 8)
    s = Spool(tmp_path, 64 * 1024)
    n_first = int(second.name[4:].split(".")[0])  # the second segment's first seq: the first one's record count
    assert drain(s) == [msg(i) for i in range(200) if i != n_first - 1]
    assert s.pending == 0  # the lost one does not hold the acknowledgements (and the spool's space) back
    assert s.corrupt == 1
    s.close()


def test_a_whole_last_record_with_a_wrong_checksum_is_counted_as_corrupt(tmp_path):
    seg, size = ten_records(tmp_path)
    overwrite(seg, 10 * size - 30, b"\xaa")
    s = Spool(tmp_path, 1 << 20)
    assert drain(s) == [msg(i) for i in range(9)]
    assert s.corrupt == 1
    s.close()


def test_segments_of_the_old_format_are_read_after_an_upgrade(tmp_path):
    """Before records carried their sequence number: [length u32][crc32(length + payload) u32][payload]."""
    import struct
    import zlib

    def old_record(payload: bytes) -> bytes:
        length = struct.pack("<I", len(payload))
        return length + struct.pack("<I", zlib.crc32(payload, zlib.crc32(length))) + payload

    (tmp_path / "seg-00000000000000000040.log").write_bytes(b"".join(old_record(msg(i)) for i in range(40, 45)))
    (tmp_path / "seg-00000000000000000045.log").write_bytes(b"".join(old_record(msg(i)) for i in range(45, 48))
                                                             + b"\x07\x00torn")
    (tmp_path / "ack").write_text("42\n")
    s = Spool(tmp_path, 1 << 20)
    assert s.pending == 6 and s.corrupt == 0
    s.append(msg(48))
    assert drain(s) == [msg(i) for i in range(42, 49)]
    s.close()
    assert not list(tmp_path.glob("seg-*"))  # read once, then gone like any delivered segment


def test_an_ack_that_cannot_be_written_is_retried_and_never_raises(tmp_path, monkeypatch):
    from edge_infer.sinks import spool as spool_module

    s = Spool(tmp_path, 1 << 20, ack_flush_s=0.0)
    for i in range(3):
        s.append(f"r{i}".encode())
    real = spool_module.replace_file

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool_module, "replace_file", full)
    s.acknowledge(0)  # the broker's PUBACK must not fail because the disk is full
    s.flush_ack()
    assert not (tmp_path / "ack").exists() and s.ack == 1
    monkeypatch.setattr(spool_module, "replace_file", real)
    s.flush_ack()  # space again: the ack is written at the next flush
    assert (tmp_path / "ack").read_text() == "1\n"
