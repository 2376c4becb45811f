"""Is a file still held open for writing by some process? Linux answers through file leases.

A read lease (``F_SETLEASE``, ``F_RDLCK``) is granted only while no process has the file open for writing
(fs/locks.c, check_conflicting_open), so taking one and dropping it at once answers the question in two
system calls, for writers in any process, without reading /proc. The kernel grants it on files we own,
or with CAP_LEASE; elsewhere (another owner, NFS, a kernel with leases disabled) the answer is "unknown".
"""
from __future__ import annotations

import errno
import fcntl
import os
import signal

F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)


def held_open_for_writing(path: str) -> bool | None:
    """True: some process has ``path`` open for writing; False: none has; None: the kernel would not say."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # Should a writer open the file in the microseconds we hold the lease, the kernel signals us to give
        # it up. The default signal is SIGIO, which would kill the process; SIGURG is ignored by default.
        fcntl.fcntl(fd, F_SETSIG, signal.SIGURG)
        try:
            fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
        except OSError as e:
            return True if e.errno == errno.EAGAIN else None
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError:
        return None
    finally:
        os.close(fd)
