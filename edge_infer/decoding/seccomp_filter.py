"""The decoder child's seccomp filter, built with pyseccomp (ctypes over the system's libseccomp.so.2).

The lists and the reasons are in ``sandbox.py``'s docstring; this module holds them as data and builds the
filter. libseccomp resolves each name for every architecture in the filter, skips a name an architecture lacks
(``fork``, ``poll``, ``dup2`` on aarch64) and adds the architecture check: a call made through another ABI
(x86's ``int 0x80``, x32) is killed.
"""
from __future__ import annotations

import errno
import os
from typing import Any

# Descriptors the child already holds: the input, the socket to the daemon, the shared-memory slot, stdio.
_FILES = ("read", "pread64", "readv", "write", "writev", "lseek", "close", "fcntl", "dup", "dup2", "dup3",
          # glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH). With a path they stat a file's metadata, not
          # its content; filtering on AT_EMPTY_PATH would not stop that (a non-empty path ignores the flag).
          "fstat", "newfstatat", "statx")
# The inherited Unix socket (multiprocessing.connection; recvmsg also carries SCM_RIGHTS: new inputs' fds).
_SOCKET = ("sendmsg", "recvmsg", "sendto", "recvfrom", "getsockname", "getpeername", "getsockopt", "shutdown")
_MEMORY = ("munmap", "mremap", "madvise", "brk")  # mmap and mprotect: below, without PROT_EXEC
_THREADS_SIGNALS = ("futex", "set_robust_list", "rseq", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
                    "sigaltstack", "restart_syscall", "exit", "exit_group")
_WAIT_TIME = ("poll", "ppoll", "select", "pselect6", "clock_gettime", "clock_getres", "clock_nanosleep",
              "nanosleep", "gettimeofday", "sched_yield", "sched_getaffinity")
_IDENTITY = ("getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getrandom", "getrusage")
ALLOWED = _FILES + _SOCKET + _MEMORY + _THREADS_SIGNALS + _WAIT_TIME + _IDENTITY

# What an exploit wants next: run a program, reach another process or the network, get a new process, or reach
# kernel attack surface. Killing (not EPERM) makes the attempt loud: the parent sees -SIGSYS.
KILLED = ("execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
          "socket", "connect", "bind", "listen", "accept", "accept4",
          "fork", "vfork",  # (and clone without CLONE_THREAD, below)
          "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
          "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_by_handle_at")

PROT_EXEC = 0x4
CLONE_THREAD = 0x00010000
# A thread must not come with new namespaces (a root child could ask for them): such a clone gets EPERM.
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000


class SeccompUnavailable(Exception):
    """pyseccomp or libseccomp.so.2 is not installed here."""


def _binding() -> Any:
    try:
        import pyseccomp  # a file is opened: libseccomp.so.2, so before Landlock
    except ImportError as e:  # pyseccomp itself
        raise SeccompUnavailable(f"pyseccomp is not installed ({e})") from e
    except (RuntimeError, OSError) as e:  # "Unable to find libseccomp", or it would not load
        raise SeccompUnavailable(f"libseccomp.so.2 cannot be loaded ({e})") from e
    return pyseccomp


def _ioctls() -> tuple[int, ...]:
    # isatty (TCGETS; io.open asks), set_blocking (FIONBIO), set_inheritable (FIOCLEX, FIONCLEX): CPython raises
    # on EPERM from the latter instead of falling back to fcntl. The values come from the platform's termios.
    import termios
    return termios.TCGETS, termios.FIONBIO, termios.FIOCLEX, termios.FIONCLEX


def build_filter(pid: int, arch: int | None = None) -> tuple[Any, tuple[str, ...]]:
    """The filter for process ``pid`` (its own kill/tgkill are allowed: abort, raise) and the names this
    libseccomp does not know (skipped: an unknown allowed call gets EPERM, an unknown killed one too).

    ``arch`` (a ``pyseccomp.Arch``) builds it for another architecture, to inspect (``export_pfc``), not load.
    """
    sc = _binding()
    f = sc.SyscallFilter(sc.ERRNO(errno.EPERM))  # unexpected calls from the runtime fail softly
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    # Every thread gets the filter, not only the caller (and NO_NEW_PRIVS with it).
    f.set_attr(sc.Attr.CTL_TSYNC, 1)
    if arch is not None:
        f.add_arch(arch)
        f.remove_arch(sc.Arch.NATIVE)
    unknown = []

    def add(action: int, name: str, *args: Any) -> None:
        if sc.resolve_syscall(sc.Arch.NATIVE, name) == -1:  # __NR_SCMP_ERROR: not in this libseccomp's tables
            unknown.append(name)
            return
        f.add_rule(action, name, *args)

    for name in ALLOWED:
        add(sc.ALLOW, name)
    for name in KILLED:
        add(sc.KILL_PROCESS, name)
    # No new executable memory: the child maps no library after the sandbox, and W^X stops shellcode staging.
    for name in ("mmap", "mprotect"):
        add(sc.ALLOW, name, sc.Arg(2, sc.MASKED_EQ, PROT_EXEC, 0))
    # clone's flags are its first argument on x86_64 and aarch64 alike. A thread shares the filter and the
    # Landlock domain of its creator, so it is allowed (OpenBLAS or Python may start one); a process is not.
    add(sc.ALLOW, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD | _CLONE_NAMESPACES, CLONE_THREAD))
    add(sc.KILL_PROCESS, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    # clone3's flags are in memory a filter cannot read. ENOSYS makes glibc's pthread_create fall back to clone.
    add(sc.ERRNO(errno.ENOSYS), "clone3")
    for request in _ioctls():
        add(sc.ALLOW, "ioctl", sc.Arg(1, sc.EQ, request))
    for name in ("kill", "tgkill"):
        add(sc.ALLOW, name, sc.Arg(0, sc.EQ, pid))
    return f, tuple(unknown)


def prepare() -> tuple[Any, tuple[str, ...]]:
    """The filter for this process, built (libseccomp loaded, termios imported) but not loaded yet."""
    return build_filter(os.getpid())


def load(f: Any) -> None:
    """Install the filter: from here on the lists above hold for every thread of this process."""
    f.load()
