"""Landlock through raw system calls (``ctypes``): a ruleset that handles every access right this kernel's ABI
knows and grants none, so that the calling thread can open nothing on the file system any more.

Descriptors opened before keep working (rights are checked when a file is opened, not when it is read): that
is the point, the decoder child gets its inputs as open descriptors. glibc has no wrappers for these calls and
Python no binding; the numbers are the generic ones (``include/uapi/asm-generic/unistd.h``), the same on x86_64
and aarch64 (libseccomp's tables agree: ``resolve_syscall(Arch.AARCH64, "landlock_create_ruleset") == 444``).
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

_SYS_CREATE_RULESET = 444
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0

# include/uapi/linux/landlock.h, by the ABI version that brought them. Rights this code does not know (a newer
# ABI's) stay unhandled, i.e. allowed, which is what the kernel documentation's sample does too.
_FS_ABI_1 = (1 << 13) - 1      # EXECUTE, WRITE_FILE, READ_FILE, READ_DIR, REMOVE_*, MAKE_* (bits 0-12)
_FS_REFER = 1 << 13            # ABI 2: link or rename across directories
_FS_TRUNCATE = 1 << 14         # ABI 3
_FS_IOCTL_DEV = 1 << 15        # ABI 5
_NET_TCP = (1 << 0) | (1 << 1)  # ABI 4: BIND_TCP, CONNECT_TCP
_SCOPES = (1 << 0) | (1 << 1)   # ABI 6: ABSTRACT_UNIX_SOCKET, SIGNAL (to processes outside the sandbox)


class _RulesetAttr(ctypes.Structure):
    # The full struct is always passed: a kernel with an older, shorter one accepts it as long as the fields it
    # does not know are zero, and they are, by the masks below.
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


@dataclass(frozen=True)
class LandlockResult:
    abi: int | None       # the kernel's Landlock ABI version; None where Landlock is not there
    enforced: bool
    detail: str           # what was handled, or why nothing was


class LandlockUnavailable(Exception):
    """This kernel has no Landlock (ENOSYS: not built in; EOPNOTSUPP: disabled at boot)."""


def handled_rights(abi: int) -> tuple[int, int, int]:
    """(file-system rights, network rights, scopes) that ABI ``abi`` knows: all of them are handled."""
    fs = _FS_ABI_1
    if abi >= 2:
        fs |= _FS_REFER
    if abi >= 3:
        fs |= _FS_TRUNCATE
    if abi >= 5:
        fs |= _FS_IOCTL_DEV
    return fs, (_NET_TCP if abi >= 4 else 0), (_SCOPES if abi >= 6 else 0)


def _syscall() -> ctypes._CFuncPtr:
    # A private CDLL(None): the running process's own libc, no file opened; restype set on it alone.
    fn = ctypes.CDLL(None, use_errno=True).syscall
    fn.restype = ctypes.c_long
    return fn


def abi_version() -> int:
    """The kernel's Landlock ABI version (1 on 5.13; 7 on 6.15+), or LandlockUnavailable."""
    rc = _syscall()(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.c_void_p(None), ctypes.c_size_t(0),
                    ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if rc < 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EOPNOTSUPP):
            raise LandlockUnavailable(f"{errno.errorcode.get(err, err)}: {os.strerror(err)}")
        raise OSError(err, os.strerror(err), "landlock_create_ruleset(VERSION)")
    return int(rc)


def deny_all_files() -> LandlockResult:
    """Restrict the calling thread (and the threads and processes it starts later) to no file-system access.

    Needs PR_SET_NO_NEW_PRIVS first (or CAP_SYS_ADMIN). Raises OSError if the kernel refuses a step it supports.
    """
    try:
        abi = abi_version()
    except LandlockUnavailable as e:
        return LandlockResult(None, False, f"unavailable: {e}")
    fs, net, scoped = handled_rights(abi)
    attr = _RulesetAttr(fs, net, scoped)
    syscall = _syscall()
    fd = syscall(ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)),
                 ctypes.c_uint32(0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), "landlock_create_ruleset")
    try:
        # No landlock_add_rule at all: nothing is allowed beneath any directory.
        if syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_long(fd), ctypes.c_uint32(0)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), "landlock_restrict_self")
    finally:
        os.close(fd)
    handled = f"fs={fs:#x}" + (f" net={net:#x}" if net else "") + (f" scoped={scoped:#x}" if scoped else "")
    return LandlockResult(abi, True, f"ABI {abi}, {handled}")
