"""Reading one input file: only a regular file, never through a link, never blocking, within its size limit.

The daemon opens each input itself (``open_input``) and hands the descriptor to a decoder process, which
reads it (``read_open``) without any access to the file system.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import TRANSIENT_ERRNOS, InputError, ResourceError


def open_input(path: Path, max_bytes: int, follow_symlinks: bool = False) -> tuple[int, os.stat_result]:
    """An open descriptor of ``path`` and its ``fstat``, with typed errors; the size limit is checked here.

    Only regular files are opened: by default a symbolic link is not followed (in a watched folder it could
    point anywhere, outside the configured folders), and a FIFO or device is never opened in blocking mode
    (it could hang a worker). A socket cannot be opened at all (ENXIO): ``unsupported`` too, not
    ``io``. The caller closes the descriptor.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise InputError("io", "file vanished before it was read") from e
    except IsADirectoryError as e:
        raise InputError("unsupported", "is a directory") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError("unsupported", "a symbolic link (links are never followed)") from e
        if e.errno == errno.ENXIO:  # open(2) of a Unix socket, or of a device without its driver
            raise InputError("unsupported", f"not a regular file ({_what(path)})") from e
        if e.errno in TRANSIENT_ERRNOS:
            raise ResourceError(f"cannot open {path}: {e.strerror or e}") from e
        raise InputError("io", f"cannot read file: {e.strerror or e}") from e
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError("unsupported", "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise InputError("unsupported", "not a regular file (a FIFO, socket or device)")
        if st.st_size > max_bytes:
            raise InputError("too_large", f"{st.st_size} bytes exceeds pipeline.max_file_bytes ({max_bytes})")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _what(path: Path) -> str:
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return "a socket or device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket or device"


def read_open(fd: int, size: int, max_bytes: int) -> bytes:
    """The bytes of an open input whose ``fstat`` said ``size``; a file that grew since is read on, up to
    the limit. ``pread``: the descriptor's offset is never shared state, and a file that shrinks reads short
    (where a mapping of it would crash on SIGBUS)."""
    try:
        # Sized by fstat: reading max_bytes + 1 would allocate (and page-map) 100 MB for every photo.
        data = os.pread(fd, size + 1, 0)
        if len(data) > size:
            data += os.pread(fd, max_bytes + 1 - len(data), len(data))
    except OSError as e:
        raise InputError("io", f"cannot read file: {e.strerror or e}") from e
    if len(data) > max_bytes:
        raise InputError("too_large", f"grew past pipeline.max_file_bytes ({max_bytes}) while being read")
    if not data:
        raise InputError("decode", "empty file (0 bytes)")
    return data


def read_input(path: Path, max_bytes: int, follow_symlinks: bool = False) -> bytes:
    """The whole file, with the typed errors of ``open_input`` (``classify`` reads its inputs this way)."""
    fd, st = open_input(path, max_bytes, follow_symlinks)
    try:
        return read_open(fd, st.st_size, max_bytes)
    finally:
        os.close(fd)


def still_there(path: Path, identity: tuple[int, ...] | None) -> bool:
    """Whether ``path`` still names the file that was read as ``identity`` (device and inode first): an input
    processed in place (see sources/claims.py) is acknowledged only then, since a newer file at its path is a
    new input with a record of its own."""
    if identity is None:
        return True  # never opened (refused before that): what is there is what was refused
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True  # the acknowledgement itself reports it gone
    return (st.st_dev, st.st_ino) == identity[:2]
