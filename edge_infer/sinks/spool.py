"""A bounded, crash-safe, append-only spool: messages wait here on disk until the broker has them.

Layout: ``seg-<first seq>.rec`` segment files of records, each with its sequence number, length and CRC
(``spool_records``), plus ``ack``: the first sequence number not yet acknowledged. A record is written once
and never rewritten.

Crash safety: an append is one ``write`` (fsynced when ``durable``), so a kill at any moment leaves whole
records plus at most one torn one at the tail, which ``open`` detects by length and CRC and cuts off. A
damaged record further in (``spool_records`` finds them) is skipped and counted (``corrupt``); the records
after it are kept, and the seqs it held count as acknowledged, so that nothing waits for them. The ack file
is written lazily (at most every ``ack_flush_s``, and on close), and synced: after a crash or a power cut it
may lag by that much, which resends a few acknowledged messages (QoS 1 allows duplicates), never skips one.
"""
from __future__ import annotations

import bisect
import errno
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .durable import fsync_dir, make_dirs, replace_file
from .spool_records import OLD_SUFFIX, RECORD, SUFFIX, pack, recover

log = logging.getLogger(__name__)

ON_FULL = ("block", "drop_oldest")
SEGMENTS_PER_SPOOL = 8  # a segment is at most 1/8 of the bound, so dropping the oldest frees little at a time
MAX_SEGMENT_BYTES = 4 * 1024 * 1024


class SpoolFull(OSError):
    """The spool holds ``max_bytes`` and its policy is ``block``: the caller must hold its input and retry."""


@dataclass
class _Segment:
    first: int  # the seq it started at (its name); its first record's, unless that one was lost
    path: Path
    size: int = 0  # bytes of whole records
    end: int = -1  # the seq after its last record

    def __post_init__(self) -> None:
        self.end = max(self.end, self.first)


class Spool:
    """Messages in order, on disk, until acknowledged. Thread-safe: one appender, one reader is the design."""

    def __init__(self, folder: Path, max_bytes: int, on_full: str = "block", ack_flush_s: float = 1.0) -> None:
        if on_full not in ON_FULL:
            raise ValueError(f"on_full must be one of {ON_FULL}, not {on_full!r}")
        self.folder, self.max_bytes, self.on_full = folder, max_bytes, on_full
        self.segment_bytes = max(4096, min(MAX_SEGMENT_BYTES, max_bytes // SEGMENTS_PER_SPOOL))
        self._ack_flush_s = ack_flush_s
        self._lock = threading.Lock()
        self.appended = threading.Condition(self._lock)  # notified on each append, for a waiting reader
        self._acked_ahead: set[int] = set()  # acknowledged out of order, beyond the contiguous prefix
        self._ack_written_at = 0.0
        self._written_ack = -1
        self._ack_failing = False  # the last ack write failed (logged once until one succeeds)
        self._fd: int | None = None
        self._cursor = (-1, 0, 0)  # (segment first seq, byte offset, seq there) where the last read ended
        self.dropped = 0  # records evicted unacknowledged (drop_oldest)
        self.corrupt = 0  # records found damaged as the spool was opened, skipped
        make_dirs(folder)  # durably: records fsynced into a folder a power cut takes back would go with it
        self._segments: list[_Segment] = []
        self.ack = self._read_ack()
        self._recover()

    # -- opening --------------------------------------------------------------------------------------------
    def _read_ack(self) -> int:
        try:
            return max(0, int((self.folder / "ack").read_text().strip()))
        except (OSError, ValueError):  # missing or torn: start at the oldest record (duplicates, never loss)
            return 0

    def _segment_files(self) -> list[tuple[int, Path]]:
        for tmp in self.folder.glob("seg-*.tmp"):  # a rewrite cut short; the segment itself is intact
            tmp.unlink()
        found: dict[int, Path] = {}
        for path in sorted(self.folder.glob("seg-*"), key=lambda p: (p.suffix != SUFFIX, p.name)):
            try:
                first = int(path.stem[4:])
            except ValueError:
                first = -1
            if first < 0 or path.suffix not in (SUFFIX, OLD_SUFFIX):
                log.warning("spool: ignoring %s (not a segment name)", path)
            elif path.suffix == OLD_SUFFIX and first in found:
                path.unlink()  # already rewritten in the new format (the .rec came first)
            else:
                found[first] = path
        return sorted(found.items())

    def _recover(self) -> None:
        files = self._segment_files()
        seqs: list[int] = []
        for i, (first, path) in enumerate(files):
            got = recover(path, first, files[i + 1][0] if i + 1 < len(files) else None)
            self.corrupt += got.corrupt
            seqs.extend(got.seqs)
            self._segments.append(_Segment(first, got.path, got.size, got.seqs[-1] + 1 if got.seqs else first))
        # The ack file may lag behind deleted segments, or be lost: never point before the oldest record.
        if self._segments:
            self.ack = max(self.ack, self._segments[0].first)
        # Seqs lost to damage (now or at an earlier start) will never be acknowledged: count them as if they were.
        held = set(seqs)
        self._acked_ahead = {s for s in range(self.ack, self.end) if s not in held}
        self._advance()
        self._drop_acked_segments()
        if self._segments and self._segments[-1].end > self.ack:
            log.info("spool: %d message(s) waiting from before (%d bytes)", self.pending, self._bytes())

    # -- state ----------------------------------------------------------------------------------------------
    @property
    def end(self) -> int:
        """The seq the next record will get."""
        return max(self.ack, self._segments[-1].end) if self._segments else self.ack

    @property
    def pending(self) -> int:
        with self._lock:
            return self.end - self.ack

    @property
    def disk_bytes(self) -> int:
        with self._lock:
            return self._bytes()

    def _bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def fits(self, payload_len: int) -> bool:
        """Whether a payload this long can ever be spooled (an empty spool holds it)."""
        return RECORD.size + payload_len <= self.max_bytes

    def full(self, extra: int = 0) -> bool:
        return self._bytes() + extra > self.max_bytes

    # -- writing --------------------------------------------------------------------------------------------
    def append(self, payload: bytes, durable: bool = True) -> int:
        """Add a record; returns how many old records were dropped to make room (``drop_oldest``).

        Raises ``SpoolFull`` (policy ``block``) and ``OSError`` (the disk); after either, nothing was added.
        """
        record_len = RECORD.size + len(payload)
        if not payload or not self.fits(len(payload)):
            raise ValueError(f"a spool record must hold 1..{self.max_bytes - RECORD.size} bytes, got {len(payload)}")
        with self._lock:
            dropped = self._make_room(record_len)
            seg = self._writable(record_len)
            seq = self.end
            record = pack(seq, payload)
            assert self._fd is not None
            view = memoryview(record)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
                if durable:
                    os.fsync(self._fd)
            except OSError:
                os.ftruncate(self._fd, seg.size)  # a partial record must not stay before the next one
                raise
            seg.size += record_len
            seg.end = seq + 1
            self.appended.notify_all()
            return dropped

    def _make_room(self, record_len: int) -> int:
        if not self.full(record_len):
            return 0
        if self.on_full == "block":
            raise SpoolFull(errno.ENOSPC, f"MQTT spool full ({self.max_bytes} bytes of results waiting for the "
                                          "broker; on_full: block)")
        dropped = 0
        while self.full(record_len) and self._segments:
            if len(self._segments) == 1:
                self._start_segment()  # never drop the file being written without a successor
            oldest = self._segments.pop(0)
            lo = max(self.ack, oldest.first)  # what was neither acknowledged yet nor lost to damage is dropped
            dropped += max(0, oldest.end - lo - sum(1 for s in self._acked_ahead if lo <= s < oldest.end))
            self.ack = max(self.ack, oldest.end)
            self._acked_ahead = {s for s in self._acked_ahead if s >= self.ack}
            oldest.path.unlink(missing_ok=True)
        self.dropped += dropped
        self._write_ack(force=True)
        return dropped

    def _writable(self, record_len: int) -> _Segment:
        # A segment takes at least one record, so a record larger than a segment still fits (alone).
        tail_full = bool(self._segments) and 0 < self._segments[-1].size and \
            self._segments[-1].size + record_len > self.segment_bytes
        if not self._segments or self._fd is None or tail_full:
            if self._segments and self._fd is None and not tail_full:
                self._open_tail()
            else:
                self._start_segment()
        return self._segments[-1]

    def _open_tail(self) -> None:
        self._fd = os.open(self._segments[-1].path, os.O_WRONLY | os.O_APPEND)

    def _start_segment(self) -> None:
        self._close_fd()
        first = self.end
        seg = _Segment(first, self.folder / f"seg-{first:020d}{SUFFIX}")
        self._fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fsync_dir(self.folder)  # the new name itself must survive a power cut
        self._segments.append(seg)

    # -- reading and acknowledging --------------------------------------------------------------------------
    def read(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` records from ``seq`` on (or from the oldest one left, if ``seq`` was dropped)."""
        with self._lock:
            seq = max(seq, self.ack)
            firsts = [s.first for s in self._segments]
            i = max(0, bisect.bisect_right(firsts, seq) - 1)
            out: list[tuple[int, bytes]] = []
            for seg in self._segments[i:]:
                if len(out) >= limit:
                    break
                if seq >= seg.end:
                    continue
                seq = max(seq, seg.first)
                out.extend(self._read_segment(seg, seq, limit - len(out)))
                seq = seg.end
            return out

    def _read_segment(self, seg: _Segment, seq: int, limit: int) -> list[tuple[int, bytes]]:
        # Resume where the last read ended (the usual case: the reader goes forward), else from the start.
        first, pos, n = self._cursor
        if first != seg.first or n > seq:
            pos, n = 0, seg.first
        out = []
        with open(seg.path, "rb") as f:
            f.seek(pos)
            while pos < seg.size and len(out) < limit:
                _, n, length, _ = RECORD.unpack(f.read(RECORD.size))
                if n >= seq:
                    out.append((n, f.read(length)))
                else:
                    f.seek(length, os.SEEK_CUR)
                pos, n = pos + RECORD.size + length, n + 1
        self._cursor = (seg.first, pos, n)
        return out

    def acknowledge(self, seq: int) -> None:
        """The broker has record ``seq``; once every earlier one is acknowledged too, it is gone for good."""
        with self._lock:
            if seq < self.ack:
                return  # dropped meanwhile, or a duplicate acknowledgement
            self._acked_ahead.add(seq)
            self._advance()
            self._drop_acked_segments()
            self._write_ack()

    def _advance(self) -> None:
        while self.ack in self._acked_ahead:
            self._acked_ahead.discard(self.ack)
            self.ack += 1

    def _drop_acked_segments(self) -> None:
        # The segment being written stays (it would only be created again); the others go once fully acknowledged.
        while len(self._segments) > 1 and self._segments[0].end <= self.ack:
            self._segments.pop(0).path.unlink(missing_ok=True)
        if len(self._segments) == 1 and self._fd is None and self._segments[0].end <= self.ack:
            self._segments.pop(0).path.unlink(missing_ok=True)  # left from before a restart, all delivered

    def flush_ack(self) -> None:
        """The ack, if it moved and ``ack_flush_s`` has passed: the reader's call between reads, for a burst's last."""
        with self._lock:
            self._write_ack()

    def _write_ack(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.ack == self._written_ack or (not force and now - self._ack_written_at < self._ack_flush_s):
            return
        try:  # synced: else a power cut takes back every ack since the last chance sync (all of that is resent)
            replace_file(self.folder / "ack", f"{self.ack}\n".encode())
        except OSError as e:  # a full or failing disk: retried at the next flush; a restart resends a little more
            if not self._ack_failing:
                log.warning("cannot write the MQTT spool's ack: %s", e.strerror or e)
            self._ack_failing, self._ack_written_at = True, now
            return
        self._ack_failing, self._ack_written_at, self._written_ack = False, now, self.ack

    # -- closing --------------------------------------------------------------------------------------------
    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        with self._lock:
            self._write_ack(force=True)
            self._close_fd()
            self._drop_acked_segments()  # an idle device leaves an empty spool folder behind
