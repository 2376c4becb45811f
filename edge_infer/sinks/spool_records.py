"""The MQTT spool's records on disk, and how a segment file is read back after a crash, a power cut or damage.

A record is ``[magic 4 bytes][seq u64][length u32][crc32 u32][payload]``; the CRC covers seq, length and
payload. Each record carries its own sequence number and starts with a magic, so a damaged stretch in the
middle of a segment (a bit flip, a page a power cut left zeroed while later pages were written) is stepped
over: the reader looks for the next magic whose record checks out, keeps every whole record after it, and
knows from the sequence numbers how many records the damage cost. Only what follows the last whole record
of the newest segment is a torn tail (a write cut short), cut off as before.

Segments written before records carried their sequence number (``seg-<first>.log``: ``[length u32]
[crc32(length + payload) u32][payload]``) are read once, up to their first bad record, and rewritten in this
format (``seg-<first>.rec``).
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from .durable import fsync_dir, replace_file

log = logging.getLogger(__name__)

MAGIC = b"\xffEIr"  # 0xff never occurs in UTF-8, so a JSON payload rarely imitates it (and the CRC decides)
RECORD = struct.Struct("<4sQII")  # magic, seq, payload length, crc32(seq + length + payload)
OLD_RECORD = struct.Struct("<II")  # the .log format: payload length, crc32(length bytes + payload)
SUFFIX, OLD_SUFFIX = ".rec", ".log"


def pack(seq: int, payload: bytes) -> bytes:
    head = struct.pack("<QI", seq, len(payload))
    return MAGIC + head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _record_at(data: bytes, pos: int, lo: int, hi: int | None) -> int | None:
    """The seq of the whole, valid record at ``pos`` if there is one with ``lo <= seq < hi``, else None."""
    if pos + RECORD.size > len(data):
        return None
    magic, seq, length, crc = RECORD.unpack_from(data, pos)
    end = pos + RECORD.size + length
    if magic != MAGIC or length == 0 or end > len(data) or seq < lo or (hi is not None and seq >= hi):
        return None
    return seq if zlib.crc32(data[pos + RECORD.size:end], zlib.crc32(data[pos + 4:pos + 16])) == crc else None


def _next_record(data: bytes, pos: int, lo: int, hi: int | None) -> tuple[int, int] | None:
    """(position, seq) of the next valid record after damage at ``pos``, if there is one."""
    at = data.find(MAGIC, pos + 1)
    while at != -1:
        seq = _record_at(data, at, lo, hi)
        if seq is not None:
            return at, seq
        at = data.find(MAGIC, at + 1)
    return None


@dataclass
class Recovered:
    path: Path
    size: int  # bytes of whole records
    seqs: list[int]  # of the records kept, in order
    corrupt: int = 0  # records found lost to damage now (later opens see only the gap they left)


def recover(path: Path, first: int, next_first: int | None) -> Recovered:
    """Read segment ``path`` (its first seq ``first``; ``next_first``: the following segment's, None for the
    newest), leaving on disk only its whole records. Raises ``OSError``."""
    data = path.read_bytes()
    if path.suffix == OLD_SUFFIX:
        return _convert(path, data, first)
    kept: list[tuple[int, int, int]] = []  # (seq, start, end)
    pos, lo, corrupt, damaged = 0, first, 0, False
    while pos < len(data):
        seq = _record_at(data, pos, lo, next_first)
        if seq is None:
            found = _next_record(data, pos, lo, next_first)
            if found is None:
                break
            (pos, seq), damaged = found, True
            corrupt += seq - lo  # the records the damaged stretch held
        end = pos + RECORD.size + RECORD.unpack_from(data, pos)[2]
        kept.append((seq, pos, end))
        pos, lo = end, seq + 1
    if pos < len(data):  # damage or a torn write after the last whole record
        if next_first is not None:
            corrupt += next_first - lo  # a newer segment exists, so these records were whole once
        elif data[pos:pos + 4] == MAGIC and pos + RECORD.size + RECORD.unpack_from(data, pos)[2] <= len(data):
            corrupt += 1  # not torn: all its bytes are there, but they changed
    if corrupt or damaged:
        log.error("spool: %s: skipped %d damaged byte(s), %d record(s) lost; the %d whole one(s) kept", path,
                  len(data) - sum(e - s for _, s, e in kept), corrupt, len(kept))
        replace_file(path, b"".join(data[s:e] for _, s, e in kept))
    elif pos < len(data):
        log.warning("spool: %s: cut %d byte(s) of a torn record at its end", path, len(data) - pos)
        os.truncate(path, pos)
    return Recovered(path, sum(e - s for _, s, e in kept), [seq for seq, _, _ in kept], corrupt)


def _convert(path: Path, data: bytes, first: int) -> Recovered:
    payloads, pos = [], 0
    while pos + OLD_RECORD.size <= len(data):
        length, crc = OLD_RECORD.unpack_from(data, pos)
        start = pos + OLD_RECORD.size
        if length == 0 or start + length > len(data) or \
                zlib.crc32(data[start:start + length], zlib.crc32(data[pos:pos + 4])) != crc:
            break  # without sequence numbers nothing after a bad record can be placed: cut, as this format did
        payloads.append(data[start:start + length])
        pos = start + length
    if pos < len(data):
        log.warning("spool: %s: cut %d byte(s) of a torn or corrupt record at its end", path, len(data) - pos)
    new = path.with_suffix(SUFFIX)
    body = b"".join(pack(first + i, p) for i, p in enumerate(payloads))
    replace_file(new, body)
    path.unlink()
    fsync_dir(path.parent)
    return Recovered(new, len(body), list(range(first, first + len(payloads))))
