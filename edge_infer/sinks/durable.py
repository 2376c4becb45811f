"""Durable files: JSON written to a temporary file, fsynced, renamed (no reader ever sees a partial file),
and inputs moved so that a power cut leaves them in one place or the other, never lost or half-copied.

Temporary files live in one hidden folder per output root (``<root>/.writing``), never beside the results:
readers listing a results folder never meet them, and the leftovers of a killed run are removed at start-up
by emptying that one folder (``clear_tmp``) instead of walking every result ever written.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
from concurrent.futures import Executor, wait
from pathlib import Path
from typing import Any, Callable

from .name_cut import cut_name

TMP_DIR = ".writing"  # not "*.tmp" itself: only leftover files should match that pattern
NAME_MAX = 255  # bytes in one file name on Linux file systems
ERROR_SUFFIX = ".error.json"  # a failure record's, after its input's name (in failed/, beside it)
SYNC_TIMEOUT_S = 60.0  # a group's fdatasyncs: an SD card's worst flushes are seconds, not minutes


def fsync_dir(path: Path) -> None:
    _sync(path, os.O_DIRECTORY, os.fsync)


def _sync(path: Path, flags: int, sync: Callable[[int], None]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        sync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    """``folder.mkdir(parents=True, exist_ok=True)``, durably: each level made here is fsynced into its parent,
    so that a power cut cannot take back a new folder along with the records already renamed into it."""
    try:
        os.mkdir(folder)
    except FileNotFoundError:
        if folder.parent == folder:
            raise
        make_dirs(folder.parent)
        make_dirs(folder)
        return
    except FileExistsError as e:
        if not folder.is_dir():  # a file stands where the folder must be: not "the destination exists"
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from e
        return
    fsync_dir(folder.parent)


def encode_json(obj: Any, end: str = "\n") -> bytes:
    """The one JSON encoding of results, for their files, JSON Lines and MQTT alike: UTF-8, and \\u escapes
    when it must (below)."""
    try:
        return (json.dumps(obj, ensure_ascii=False) + end).encode("utf-8")
    except UnicodeEncodeError:
        # A file name that is not UTF-8 (Python holds its bytes as lone surrogates): \u escapes keep the JSON
        # valid, and decoding it gives back the very name (os.fsencode turns it into the original bytes).
        return (json.dumps(obj, ensure_ascii=True) + end).encode("ascii")


def write_json_atomic(path: Path, obj: Any, root: Path) -> None:
    """Commit ``obj`` at ``path`` (somewhere under ``root``): after this returns, a power cut leaves either
    the old file or this one. The order is the durable one: data fsynced, renamed, folder fsynced."""
    make_dirs(path.parent)
    tmp_dir = root / TMP_DIR
    tmp_dir.mkdir(exist_ok=True)
    data = encode_json(obj)
    tmp = _write_tmp(tmp_dir, data)
    try:
        try:
            os.replace(tmp, path)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            # A sub-folder mounted from another file system: rename works only within the folder itself.
            tmp.unlink(missing_ok=True)
            tmp = _write_tmp(path.parent, data, prefix=".")
            os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def replace_file(path: Path, data: bytes) -> None:
    """``path`` replaced by ``data`` durably, through ``<path>.tmp`` beside it (one fixed name: a crash leaves
    at most that one file, overwritten next time): after this ``path`` holds ``data``, or (a crash meanwhile)
    what it held before, never a mix. For files rewritten whole: the spool's ack, a recovered segment."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_group(records: list[tuple[Path, Any, Path]], pool: Executor | None = None) -> None:
    """Commit several ``(path, obj, root)`` records as ``write_json_atomic`` does each one, syncing only
    our own files: every temporary file is written, each one fdatasynced (from ``pool``'s threads when
    given: their writes and device cache flushes, one per file on ext4, then overlap), every one renamed
    into place, and each folder they went to fsynced once (the renames durable). ``syncfs`` did it in two
    calls, but flushed every dirty page of the file system, other programs' too: with 200 MB of someone
    else's unsynced data a burst took 105-130 ms instead of 2-20 (README, "Commit latency"). A crash at any
    point leaves each record either absent or whole.
    """
    if len(records) == 1:
        path, obj, root = records[0]
        write_json_atomic(path, obj, root)
        return
    staged: list[tuple[Path, Path, Any]] = []
    try:
        for path, obj, root in records:
            make_dirs(path.parent)  # a new folder's own entry is durable too (the folder fsync below is not it)
            (root / TMP_DIR).mkdir(exist_ok=True)
            staged.append((_write_tmp(root / TMP_DIR, encode_json(obj), sync=False), path, obj))
        _fdatasync_all([tmp for tmp, _, _ in staged], pool)  # all data durable before the first rename
        while staged:
            tmp, path, obj = staged[0]
            try:
                os.replace(tmp, path)
            except OSError as e:
                if e.errno != errno.EXDEV:
                    raise
                tmp.unlink(missing_ok=True)  # a sub-folder on another file system: the one-record way
                write_json_atomic(path, obj, path.parent)
            staged.pop(0)
        for folder in {path.parent for path, _, _ in records}:
            fsync_dir(folder)
    finally:
        for tmp, _, _ in staged:  # not renamed: a full disk must not keep the partial copies
            tmp.unlink(missing_ok=True)


def _fdatasync_all(paths: list[Path], pool: Executor | None) -> None:
    if pool is None:
        for path in paths:
            _fdatasync(path)
        return
    futures = [pool.submit(_fdatasync, path) for path in paths]
    wait(futures, timeout=SYNC_TIMEOUT_S)  # every one finished (or hung) before any error is raised
    for f in futures:
        f.result(timeout=0)  # a hung disk: TimeoutError, an OSError, and the writer retries


def _fdatasync(path: Path) -> None:
    # fdatasync, not fsync: a new file's size (needed to read it back) is synced either way; its times are not.
    _sync(path, 0, os.fdatasync)


def _write_tmp(folder: Path, data: bytes, prefix: str = "", sync: bool = True) -> Path:
    tmp = folder / f"{prefix}{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if sync:
            os.fsync(fd)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)  # a full disk must not also keep the partial copy
        raise
    os.close(fd)
    return tmp


def clear_tmp(root: Path) -> int:
    """Remove what a killed run left in ``root``'s temporary folder; call before anything writes there."""
    n = 0
    try:
        entries = list(os.scandir(root / TMP_DIR))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.endswith(".tmp") and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
            n += 1
    return n


def read_json(path: Path) -> dict[str, Any] | None:
    """The object at ``path``, or None when it is missing or not a complete JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def record_name(name: str, suffix: str) -> str:
    """``name + suffix``, unless that is too long for a file name: then the name is cut and a hash of the
    whole name keeps it unique (the record's ``input`` field holds the full name)."""
    full = name + suffix
    raw = os.fsencode(full)
    if len(raw) <= NAME_MAX:
        return full
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    keep = cut_name(name, NAME_MAX - len(os.fsencode(suffix)) - len(digest) - 1)
    return f"{keep}~{digest}{suffix}"


def _under(root: Path, rel: str, suffix: str) -> Path:
    head, _, name = rel.rpartition("/")
    return root / head / record_name(name, suffix)


def result_path(output_dir: Path, source: str, rel: str) -> Path:
    return _under(output_dir / source, rel, ".json")


def error_path(failed_dir: Path, rel: str) -> Path:
    return _under(failed_dir, rel, ERROR_SUFFIX)


def move_file(src: Path, dest: Path) -> None:
    """Rename within a file system; across file systems copy, fsync, then unlink (a power cut in between
    leaves the input in place, to be redone, never a lost or half-copied one). Never over an existing
    ``dest``, even one that appears meanwhile: that raises ``FileExistsError`` (see filing.py)."""
    make_dirs(dest.parent)
    try:
        rename_noreplace(src, dest)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    if not (src.is_file() or src.is_symlink()):
        src.unlink()  # a FIFO or device cannot be copied; its error record says what it was
        return
    if os.path.lexists(dest):  # before copying a large file in vain
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest))
    # Copied under a hidden temporary name, renamed into place once complete: no reader of done/ ever sees
    # a partial file, and the rename, like the one above, never replaces.
    tmp = dest.parent / f".{uuid.uuid4().hex}.tmp"
    try:
        shutil.copy2(src, tmp, follow_symlinks=False)  # a symlink is moved as a link, never followed
        if not tmp.is_symlink():
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        rename_noreplace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    try:
        src.unlink()
    except OSError:
        dest.unlink()  # it stays where it was (immutable, its folder not ours): no second copy left behind
        raise


_RENAME_NOREPLACE, _AT_FDCWD = 1, -100
_renameat2: Any = None


def rename_noreplace(src: Path, dest: Path) -> None:
    """``rename`` that raises ``FileExistsError`` instead of replacing ``dest``, atomically:
    ``renameat2(RENAME_NOREPLACE)``; where the kernel or file system lacks it, ``link`` + ``unlink`` (a link
    never replaces either); where hard links are not supported either (FAT), a check then ``rename``, which
    a file appearing in between could still lose to (no atomic way is left there)."""
    global _renameat2
    if _renameat2 is None:
        import ctypes

        _renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", False)
    if _renameat2:
        import ctypes

        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dest), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL):  # EINVAL: this file system does not take the flag
            raise OSError(err, os.strerror(err), str(src), None, str(dest))
    try:
        os.link(src, dest, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(dest):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dest)) from e
        os.rename(src, dest)
        return
    os.unlink(src)
