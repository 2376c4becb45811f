"""Reading one input file: only a regular file, never through a link, never blocking, within its size limit."""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import InputError


def read_input(path: Path, max_bytes: int, follow_symlinks: bool = False) -> bytes:
    """The whole file, with typed errors; the size limit is checked before reading a byte.

    Only regular files are read: by default a symbolic link is not followed (in a watched folder it could
    point anywhere, outside the configured folders), and a FIFO or device is never opened in blocking mode
    (it could hang a worker).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        with open(os.open(path, flags), "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise InputError("unsupported", "not a regular file (a FIFO, socket or device)")
            size = st.st_size
            if size > max_bytes:
                raise InputError("too_large", f"{size} bytes exceeds pipeline.max_file_bytes ({max_bytes})")
            # Sized by fstat: read(max_bytes + 1) would allocate (and page-map) 100 MB for every photo,
            # ~65 us each here. A file that grew since fstat is read on, up to the limit.
            data = f.read(size + 1)
            if len(data) > size:
                data += f.read(max_bytes + 1 - len(data))
    except FileNotFoundError as e:
        raise InputError("io", "file vanished before it was read") from e
    except IsADirectoryError as e:
        raise InputError("unsupported", "is a directory") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError("unsupported", "a symbolic link (links are never followed)") from e
        raise InputError("io", f"cannot read file: {e.strerror or e}") from e
    if not data:
        raise InputError("decode", "empty file (0 bytes)")
    return data
