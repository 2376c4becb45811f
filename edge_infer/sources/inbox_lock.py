"""One owner per inbox: a daemon holds each folder source's inbox with ``flock(LOCK_EX)`` from
before it loads its model until it exits; a second daemon on that inbox (a manual run beside the
service) is refused before it starts or writes anything.

The lock is taken on a read-only descriptor of the inbox folder itself: nothing is written into the
inbox (which may be read-only with ``after: keep``), the kernel drops the lock with the holder's
last descriptor (a kill -9 or a power cut never leaves it stale, as a pid file would be), and
/proc/locks lists the holder's pid by the folder's device and inode. The descriptors are not
inherited across exec (the decoders' fork server is exec'd), so no child of the daemon outlives it
holding the lock.

A recursive source on a parent of another daemon's inbox would take that inbox's files too: each
daemon also holds ``LOCK_SH`` on every folder above its inboxes (``/`` aside), which conflicts with
the other's ``LOCK_EX`` on that parent whichever starts first. A non-recursive source on such a
parent is refused as well: one flock cannot say how deep its holder watches. flock is advisory (only
edge-infer honours it) and local: where the file system refuses it (a network file system may: there
flock becomes a lock on the server) a warning is logged and the daemon runs unlocked.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from ..config import AppConfig, FolderSourceConfig
from ..errors import ConfigError
from ..sinks.durable import make_dirs

log = logging.getLogger(__name__)
PROC_LOCKS = Path("/proc/locks")
Holders = list[tuple[int, str]]  # (pid, "READ" or "WRITE"); pid 0: one /proc/locks does not show


def lock_holders(fd: int) -> Holders:
    """Every process holding a flock on the folder open as ``fd``, as /proc/locks lists them."""
    st = os.fstat(fd)
    # "1: FLOCK  ADVISORY  WRITE 8267 fe:00:2155321 0 EOF": major and minor in hex, inode in decimal
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = PROC_LOCKS.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        f = line.split()
        if len(f) >= 6 and f[1] == "FLOCK" and f[5] == where and f[4].isdigit():
            found.append((int(f[4]), f[3]))
    return found


def _pids(holders: Holders) -> str:
    pids = sorted({pid for pid, _ in holders if pid})
    return f"pid {', '.join(map(str, pids))}" if pids else "pid unknown"


def _flock(fd: int, op: int, folder: Path) -> Holders | None:
    """[] when held; else who holds it. None (warned) where the file system cannot lock."""
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return []
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            log.warning("cannot lock %s (%s): a second daemon on it would not be refused", folder,
                        e.strerror)
            return None
    return lock_holders(fd) or [(0, "WRITE")]  # a holder in another pid namespace is not listed


class InboxLocks:
    """The flocks one daemon holds on its inboxes and the folders above them."""

    def __init__(self) -> None:
        self._fds: list[int] = []

    def hold(self, config: AppConfig) -> None:
        """Every folder source's inbox, then the folders above them. ``ConfigError`` naming the
        source's key, the folder and the holder's pid when another daemon has one (none kept)."""
        try:
            self._hold_parents(self._hold_inboxes(config))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # with its last descriptor the flock is gone
        self._fds.clear()

    def _open(self, folder: Path) -> int:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fds.append(fd)
        return fd

    def _hold_inboxes(self, config: AppConfig) -> dict[Path, str]:
        held: dict[Path, str] = {}  # real path -> key
        for i, s in enumerate(config.sources):
            if not isinstance(s, FolderSourceConfig):
                continue
            key = f"sources[{i}].path"
            make_dirs(s.path)  # as the source would at its start: the lock needs the folder
            holders = _flock(self._open(s.path), fcntl.LOCK_EX, s.path)
            if holders and all(mode == "READ" for _, mode in holders):
                raise ConfigError(key, f"{s.path} holds the inbox of another edge-infer "
                                       f"({_pids(holders)}), which a source here would take inputs "
                                       "from too: one daemon per inbox")
            if holders:
                raise ConfigError(key, f"{s.path} is the inbox of another edge-infer, "
                                       f"{_pids(holders)}: one daemon per inbox (stop that one, or "
                                       "give this config its own folders)")
            if holders is not None:
                held[Path(os.path.realpath(s.path))] = key
        return held

    def _hold_parents(self, inboxes: dict[Path, str]) -> None:
        seen: set[Path] = set()
        for inbox, key in inboxes.items():
            for parent in inbox.parents:
                # Not "/": other software flocks it as a global mutex. Nor our own inboxes.
                if parent == Path(parent.anchor) or parent in seen or parent in inboxes:
                    continue
                seen.add(parent)
                try:
                    fd = self._open(parent)
                except OSError as e:  # may be passed through, not read: that level goes unchecked
                    log.debug("cannot open %s to lock it (%s): not checked for another owner",
                              parent, e)
                    continue
                holders = _flock(fd, fcntl.LOCK_SH, parent)
                if holders:
                    raise ConfigError(key, f"{inbox} is inside {parent}, the inbox of another "
                                           f"edge-infer ({_pids(holders)}), which may watch it "
                                           "recursively: one daemon per inbox")
