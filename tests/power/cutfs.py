"""cutfs: a FUSE file system with a volatile cache, for power-cut tests (SQLite's crash VFS and Jepsen's
LazyFS in spirit).

Every operation passes through to a backing folder (the live state, what running programs see), while the
file system keeps what the disk would still hold after a power cut (the durable state):

- a file's data and size are made durable by ``fsync``/``fdatasync`` of that file, and by nothing else;
- a folder's entries (creates, links, unlinks, renames) are made durable by ``fsync`` of that folder; a
  rename is one transaction, as on every journaling file system: an ``fsync`` of either of its folders
  makes it durable in both (and the renames of the same file before it);
- a file's own entry is *not* made durable by an ``fsync`` of the file (ext4 happens to do it; POSIX does
  not promise it), and a new folder's entry only by an ``fsync`` of its parent;
- ``syncfs`` never reaches a FUSE file system (the kernel passes it only to virtiofs), nor does ``sync``:
  so whatever relies on them is seen here as unsynced, and fails.

A *cut* (the ``cut`` control command, then the mount taken away) freezes the file system at once (every
later operation fails with EIO, as a disk without power does), and when the mount goes the backing folder
is rewritten to the durable state in the worst allowed order: nothing that was not made durable survives.
Files a durable entry points to but nothing made durable come back empty, appends not synced are gone, a
folder whose entry was never synced is gone with everything in it. Mounting the backing folder again is
the machine coming back.

Run: ``python tests/power/cutfs.py BACKING MOUNTPOINT --control SOCKET`` (root, /dev/fuse, libfuse3 and
PyPI's mfusepy). The control socket takes one command per connection: ``cut``, ``sync`` (everything
durable, as a clean shutdown leaves it), ``stats`` (JSON: the syncs seen). ``tests/power/mount.py`` drives
it; ``tests/power/test_cutfs.py`` shows what survives each kind of sync.
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import json
import logging
import os
import shutil
import socket
import stat
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mfusepy

log = logging.getLogger("cutfs")
ROOT = 0  # the id of the mount's root folder
_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class FileState:
    """How a file's durable content relates to its live one."""

    clean: bool = True  # durable content == live content
    prefix: int | None = None  # not clean, not saved: the durable content is the live file's first bytes
    saved: bool = False  # not clean: the durable content is a copy in the store


@dataclass
class Handle:
    fd: int  # on the backing folder
    ident: int


@dataclass
class Stats:
    fsync: int = 0
    fdatasync: int = 0
    fsyncdir: int = 0
    cut: bool = False
    errors_after_cut: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class PowerOff(OSError):
    def __init__(self) -> None:
        super().__init__(errno.EIO, "cutfs: the power is off")


class CutFS(mfusepy.Operations):
    """The operations; every one under one lock (the state below is one consistent picture)."""

    use_ns = True
    flag_nopath = True  # with flag_nullpath_ok: libfuse sets nullpath_ok, so hard_remove works with open files
    flag_nullpath_ok = True

    def __init__(self, backing: Path, store: Path) -> None:
        self.backing = backing
        self.store = store  # durable copies of files whose live content has moved on, or that are gone
        self._mutex = threading.RLock()
        self.powered = True
        self.stats = Stats()
        self._next = ROOT + 1
        self.kind: dict[int, str] = {}  # id -> "f" file, "d" folder, "l" symlink, "o" other (FIFO, device)
        self.files: dict[int, FileState] = {}
        self.targets: dict[int, str] = {}  # symlinks
        self.durable: dict[int, dict[str, int]] = {}  # folder id -> its durable entries
        self.refs: dict[int, int] = {}  # id -> durable entries naming it
        self.ids: dict[int, int] = {}  # backing st_ino -> id, for live objects
        self.gone: set[int] = set()  # files no longer linked live (their durable content is in the store)
        self.renames: list[tuple[int, str, int, str, int]] = []  # (src dir, name, dest dir, name, id) not durable
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        self._adopt(ROOT, backing)

    # --- the durable model -------------------------------------------------------------------------------

    def _adopt(self, ident: int, path: Path) -> None:
        """Take what is on the backing folder at mount as durable (the disk as found)."""
        st = os.lstat(path)
        self.ids[st.st_ino] = ident
        self.kind[ident] = _kind(st.st_mode)
        if self.kind[ident] == "f":
            self.files[ident] = FileState()
        elif self.kind[ident] == "l":
            self.targets[ident] = os.readlink(path)
        elif self.kind[ident] == "d":
            entries: dict[str, int] = {}
            for entry in os.scandir(path):
                ino = entry.inode()
                child = self.ids.get(ino)
                if child is None:
                    child = self._new_id()
                    self._adopt(child, Path(entry.path))
                entries[entry.name] = child
            self._set_durable(ident, entries)

    def _new_id(self) -> int:
        self._next += 1
        return self._next

    def _set_durable(self, folder: int, entries: dict[str, int]) -> None:
        for child in self.durable.get(folder, {}).values():
            self.refs[child] -= 1
        for child in entries.values():
            self.refs[child] = self.refs.get(child, 0) + 1
        self.durable[folder] = entries

    def _id_of(self, backing_path: str | Path, st: os.stat_result | None = None) -> int:
        st = st or os.lstat(backing_path)
        ident = self.ids.get(st.st_ino)
        if ident is None:  # made behind our back (the backing folder is ours alone): never durable
            ident = self._created(backing_path, st)
        return ident

    def _live(self, path: str | None) -> str:
        self._powered()
        if path is None:
            raise OSError(errno.EBADF, "no path")
        return os.path.join(self.backing, path.lstrip("/"))

    def _powered(self) -> None:
        if not self.powered:
            self.stats.errors_after_cut += 1
            raise PowerOff()

    def _dir_id(self, backing_path: str) -> int:
        return self._id_of(os.path.dirname(backing_path.rstrip("/")) or "/")

    def _created(self, backing_path: str | Path, st: os.stat_result | None = None) -> int:
        """A new object, nothing of it durable yet: a file's durable content is empty, a folder's has no entry."""
        st = st or os.lstat(backing_path)
        ident = self._new_id()
        self.ids[st.st_ino] = ident
        self.kind[ident] = _kind(st.st_mode)
        if self.kind[ident] == "f":
            self.files[ident] = FileState(clean=False, prefix=0)  # durable: empty, until synced
        elif self.kind[ident] == "d":
            self._set_durable(ident, {})
        elif self.kind[ident] == "l":
            self.targets[ident] = os.readlink(backing_path)
        return ident

    def _before_write(self, ident: int, fd: int, offset: int) -> None:
        """Keep the durable content before a write at ``offset`` changes the live one."""
        f = self.files.get(ident)
        if f is None or ident in self.gone:
            return
        if f.clean:
            f.clean, f.prefix = False, os.fstat(fd).st_size  # an append keeps the old bytes as they are
        if f.prefix is not None and offset < f.prefix:
            self._save(ident, fd, f.prefix)  # a write into what is durable: keep a copy of it

    def _save(self, ident: int, fd: int, size: int) -> None:
        f = self.files[ident]
        # Through /proc: ``fd`` may be write-only, and its file unlinked.
        with open(f"/proc/self/fd/{fd}", "rb") as src, open(self.store / str(ident), "wb") as out:
            out.write(src.read(size) if size else b"")
        f.clean, f.prefix, f.saved = False, None, True

    def _synced(self, ident: int, fd: int) -> None:
        f = self.files.get(ident)
        if f is None:
            return
        if ident in self.gone:  # unlinked live, still named by a durable entry: its content is the store's
            if self.refs.get(ident, 0):
                self._save(ident, fd, os.fstat(fd).st_size)
            return
        if f.saved:
            (self.store / str(ident)).unlink(missing_ok=True)
        f.clean, f.prefix, f.saved = True, None, False

    def _losing_link(self, backing_path: str) -> None:
        """Before ``backing_path`` is unlinked or renamed over: the last live link of a file gone, keep its
        durable content where the cut can find it, and forget its inode number (the backing file system
        may give it to a new file)."""
        try:
            st = os.lstat(backing_path)
        except FileNotFoundError:
            return
        ident = self._id_of(backing_path, st)
        if self.kind[ident] == "d" or st.st_nlink > 1:
            if self.kind[ident] == "d":
                self.ids.pop(st.st_ino, None)
            return
        self.ids.pop(st.st_ino, None)
        f = self.files.get(ident)
        # Named by a durable entry, or by a rename that a later folder sync may still make durable.
        named = self.refs.get(ident, 0) or any(r[4] == ident for r in self.renames)
        if f is not None and named and (f.clean or f.prefix is not None):
            fd = os.open(backing_path, os.O_RDONLY)
            try:
                self._save(ident, fd, os.fstat(fd).st_size if f.clean else f.prefix or 0)
            finally:
                os.close(fd)
        self.gone.add(ident)

    def fsync_folder(self, folder: int, backing_dir: str) -> None:
        """The folder's live entries become its durable ones, and every rename into or out of it becomes
        durable in the other folder too, with the renames of the same file before it (one journal)."""
        entries = {e.name: self._id_of(os.path.join(backing_dir, e.name), e.stat(follow_symlinks=False))
                   for e in os.scandir(backing_dir)}
        self._set_durable(folder, entries)
        last = {r[4]: i for i, r in enumerate(self.renames) if folder in (r[0], r[2])}
        keep = []
        for i, r in enumerate(self.renames):
            if r[4] in last and i <= last[r[4]]:
                self._apply_rename(r, skip=folder)
            else:
                keep.append(r)
        self.renames = keep

    def _apply_rename(self, r: tuple[int, str, int, str, int], skip: int) -> None:
        src, old, dst, new, ident = r
        if src != skip and self.durable.get(src, {}).get(old) == ident:
            entries = dict(self.durable[src])
            del entries[old]
            self._set_durable(src, entries)
        if dst != skip:
            entries = dict(self.durable.get(dst, {}))
            entries[new] = ident
            self._set_durable(dst, entries)

    def sync_all(self) -> None:
        """Everything durable: what a clean shutdown (sync, unmount) leaves on the disk."""
        for dirpath, dirnames, filenames in os.walk(self.backing):
            self.fsync_folder(self._id_of(dirpath), dirpath)
            for name in filenames:
                p = os.path.join(dirpath, name)
                if os.path.islink(p):
                    continue
                ident = self._id_of(p)
                if self.kind[ident] == "f":
                    fd = os.open(p, os.O_RDONLY)
                    try:
                        self._synced(ident, fd)
                    finally:
                        os.close(fd)
        self.renames.clear()

    def write_durable_image(self, dest: Path) -> None:
        """Write the durable state into the empty folder ``dest``: the disk as power returns."""
        live: dict[int, str] = {}
        for dirpath, dirnames, filenames in os.walk(self.backing):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                ident = self.ids.get(os.lstat(p).st_ino)
                if ident is not None:
                    live.setdefault(ident, p)
        written: dict[int, str] = {}

        def emit(folder: int, out: str) -> None:
            for name, child in self.durable.get(folder, {}).items():
                target = os.path.join(out, name)
                kind = self.kind.get(child)
                if kind == "d":
                    os.mkdir(target)
                    emit(child, target)
                elif kind == "l":
                    os.symlink(self.targets[child], target)
                elif kind == "f":
                    if child in written:
                        os.link(written[child], target)
                        continue
                    self._write_content(child, live.get(child), target)
                    written[child] = target
                # other kinds (FIFOs, devices) do not come back: nothing here makes them

        emit(ROOT, str(dest))

    def _write_content(self, ident: int, live_path: str | None, target: str) -> None:
        f = self.files[ident]
        saved = self.store / str(ident)
        if ident in self.gone or f.saved:
            if saved.exists():
                shutil.copyfile(saved, target)
            else:
                open(target, "wb").close()
        elif f.clean and live_path is not None:
            shutil.copyfile(live_path, target)
        else:
            with open(target, "wb") as out:
                if f.prefix and live_path is not None:
                    with open(live_path, "rb") as src:
                        out.write(src.read(f.prefix))

    # --- the operations --------------------------------------------------------------------------------------

    def _count(self, op: str) -> None:
        self.stats.kinds[op] = self.stats.kinds.get(op, 0) + 1

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            if path is None and fh is not None:
                self._powered()
                st = os.fstat(self.handles[fh].fd)
            else:
                st = os.lstat(self._live(path))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_rdev", "st_blocks")
        attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def access(self, path: str, amode: int) -> int:
        with self._mutex:
            if not os.access(self._live(path), amode):
                raise OSError(errno.EACCES, "access")
        return 0

    def readlink(self, path: str) -> str:
        with self._mutex:
            return os.readlink(self._live(path))

    def statfs(self, path: str) -> dict[str, int]:
        with self._mutex:
            sv = os.statvfs(self._live(path))
        return {k: getattr(sv, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                                            "f_ffree", "f_favail", "f_flag", "f_namemax")}

    def chmod(self, path: str | None, mode: int) -> int:
        with self._mutex:
            if path is not None:
                os.chmod(self._live(path), mode, follow_symlinks=False)
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        with self._mutex:
            if path is not None:
                os.chown(self._live(path), uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        with self._mutex:
            if path is not None:
                live = self._live(path)
                if times is None:
                    os.utime(live, follow_symlinks=False)
                else:
                    os.utime(live, ns=times, follow_symlinks=False)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex:
            live = self._live(path)
            os.mkdir(live, mode)
            self._created(live)
            self._count("mkdir")
        return 0

    def mknod(self, path: str, mode: int, dev: int) -> int:
        with self._mutex:
            live = self._live(path)
            os.mknod(live, mode, dev)
            self._created(live)
        return 0

    def symlink(self, target: str, source: str) -> int:
        with self._mutex:
            live = self._live(target)
            os.symlink(source, live)
            self._created(live)
        return 0

    def link(self, target: str, source: str) -> int:
        with self._mutex:
            live_target, live_source = self._live(target), self._live(source)
            self._id_of(live_source)
            os.link(live_source, live_target, follow_symlinks=False)
            self._count("link")
        return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            live = self._live(path)
            self._losing_link(live)
            os.unlink(live)
            self._count("unlink")
        return 0

    def rmdir(self, path: str) -> int:
        with self._mutex:
            live = self._live(path)
            ino = os.lstat(live).st_ino
            os.rmdir(live)
            self.ids.pop(ino, None)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        with self._mutex:
            live_old, live_new = self._live(old), self._live(new)
            if flags & ~_RENAME_NOREPLACE:
                raise OSError(errno.EINVAL, "cutfs: only RENAME_NOREPLACE")
            ident = self._id_of(live_old)
            src, dst = self._dir_id(live_old), self._dir_id(live_new)
            if flags & _RENAME_NOREPLACE:
                if os.path.lexists(live_new):
                    raise OSError(errno.EEXIST, "exists")
            elif (os.path.lexists(live_new) and not os.path.isdir(live_new)
                  and os.lstat(live_new).st_ino != os.lstat(live_old).st_ino):
                self._losing_link(live_new)
            _renameat2(live_old, live_new, flags)
            self.renames.append((src, os.path.basename(live_old), dst, os.path.basename(live_new), ident))
            self._count("rename")
        return 0

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            live = self._live(path)
            fd = os.open(live, flags & ~(os.O_CREAT | os.O_TRUNC))
            return self._handle(fd, self._id_of(live, os.fstat(fd)), flags)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        flags = fi if isinstance(fi, int) else os.O_WRONLY
        with self._mutex:
            live = self._live(path)
            existed = os.path.lexists(live)
            fd = os.open(live, (flags | os.O_CREAT) & ~os.O_TRUNC, mode)
            ident = self._id_of(live, os.fstat(fd)) if existed else self._created(live)
            self._count("create")
            return self._handle(fd, ident, flags)

    def _handle(self, fd: int, ident: int, flags: int = 0) -> int:
        if flags & os.O_TRUNC:  # truncated here, not by the open: the durable content is kept first
            self._truncate(ident, fd, 0)
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(fd, ident)
        return fh

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            self._powered()
            return os.pread(self.handles[fh].fd, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            self._powered()
            h = self.handles[fh]
            self._before_write(h.ident, h.fd, offset)
            return os.pwrite(h.fd, data, offset)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._mutex:
            if fh is not None:
                self._powered()
                h = self.handles[fh]
                self._truncate(h.ident, h.fd, length)
                return 0
            live = self._live(path)
            fd = os.open(live, os.O_WRONLY)
            try:
                self._truncate(self._id_of(live, os.fstat(fd)), fd, length)
            finally:
                os.close(fd)
        return 0

    def _truncate(self, ident: int, fd: int, length: int) -> None:
        f = self.files.get(ident)
        if f is not None and ident not in self.gone:
            size = os.fstat(fd).st_size
            if f.clean:
                if length < size:
                    self._save(ident, fd, size)
                else:
                    f.clean, f.prefix = False, size
            elif f.prefix is not None and length < f.prefix:
                self._save(ident, fd, f.prefix)
        os.ftruncate(fd, length)

    def fallocate(self, path: str | None, mode: int, offset: int, size: int, fh: int) -> int:
        raise OSError(errno.EOPNOTSUPP, "fallocate")

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def release(self, path: str | None, fh: int) -> int:
        with self._mutex:
            h = self.handles.pop(fh, None)
            if h is not None:
                os.close(h.fd)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self._mutex:
            self._powered()
            h = self.handles[fh]
            self._synced(h.ident, h.fd)
            if datasync:
                self.stats.fdatasync += 1
            else:
                self.stats.fsync += 1
        return 0

    def opendir(self, path: str) -> int:
        with self._mutex:
            live = self._live(path)
            fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
            return self._handle(fd, self._id_of(live, os.fstat(fd)))

    def readdir(self, path: str | None, fh: int) -> list[str]:
        with self._mutex:
            self._powered()
            return [".", ".."] + os.listdir(self.handles[fh].fd)

    def releasedir(self, path: str | None, fh: int) -> int:
        return self.release(path, fh)

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        with self._mutex:
            self._powered()
            h = self.handles[fh]
            self.fsync_folder(h.ident, _fd_path(h.fd))
            self.stats.fsyncdir += 1
        return 0

    # --- power ----------------------------------------------------------------------------------------------

    def cut(self) -> None:
        with self._mutex:
            self.powered = False
            self.stats.cut = True


def _kind(mode: int) -> str:
    return "d" if stat.S_ISDIR(mode) else "f" if stat.S_ISREG(mode) else "l" if stat.S_ISLNK(mode) else "o"


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


def _renameat2(old: str, new: str, flags: int) -> None:
    if _libc.renameat2(_AT_FDCWD, os.fsencode(old), _AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old, None, new)


class _FUSE(mfusepy.FUSE):
    """mfusepy (3.1) drops rename's flags and truncate's file handle: RENAME_NOREPLACE must reach the
    backing folder, not turn into a rename that replaces, and an ``ftruncate`` (or an open with O_TRUNC)
    comes with a handle and no path."""

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        return self.operations.truncate(None if path is None else path.decode(self.encoding, self.errors),
                                        length, fh)

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(old.decode(self.encoding, self.errors),
                                      new.decode(self.encoding, self.errors), flags)


def _serve_control(fs: CutFS, sock_path: str) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass
    srv.bind(sock_path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn:
            cmd = conn.recv(64).decode().strip()
            if cmd == "cut":
                fs.cut()
                reply = "ok"
            elif cmd == "sync":
                with fs._mutex:
                    fs.sync_all()
                reply = "ok"
            elif cmd == "stats":
                with fs._mutex:
                    reply = json.dumps(fs.stats.__dict__)
            else:
                reply = f"unknown command {cmd!r}"
            conn.sendall(reply.encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("backing", type=Path)
    ap.add_argument("mountpoint", type=Path)
    ap.add_argument("--control", required=True, help="a Unix socket path for cut / sync / stats")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="cutfs: %(message)s")
    backing = args.backing.resolve()
    store = backing.parent / f".{backing.name}.cutfs-store"
    fs = CutFS(backing, store)
    threading.Thread(target=_serve_control, args=(fs, args.control), daemon=True).start()
    _FUSE(fs, str(args.mountpoint), foreground=True, hard_remove=True, default_permissions=True,
          allow_other=True, fsname="cutfs")
    # The mount is gone: after a cut, the disk as power returns; else everything stays (a clean unmount).
    if fs.stats.cut:
        image = backing.parent / f".{backing.name}.cutfs-image"
        shutil.rmtree(image, ignore_errors=True)
        image.mkdir()
        fs.write_durable_image(image)
        old = backing.parent / f".{backing.name}.cutfs-old"
        os.rename(backing, old)
        os.rename(image, backing)
        shutil.rmtree(old)
    shutil.rmtree(store, ignore_errors=True)
    print("cutfs: " + json.dumps(fs.stats.__dict__), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
