"""Locking down a decoder child: it calls ``apply_sandbox`` on itself once, after importing everything it needs
and before touching any input. Afterwards it can use the descriptors it holds (the image, the Unix socket to
the daemon, the shared-memory slot) and receive more over that socket, but open no file and start no program.

Before the call the child must have: imported what it will run (``PIL.Image`` and ``Image.init()``: Pillow
imports its plugins lazily, and an import afterwards cannot open its file; numpy; any text codec); attached the
shared-memory slot (``SharedMemory(name=...)`` opens ``/dev/shm``); and started no thread, because Landlock and
the ``prctl`` flags apply to the calling thread only (the seccomp filter is synced to all; numpy's OpenBLAS
starts a thread per core at import unless ``OPENBLAS_NUM_THREADS=1`` is set first): the ``threads`` step fails
if there is more than one. Importing
pyseccomp runs ``ldconfig``; the forkserver can preload it (``set_forkserver_preload``).

The steps, in order; the report says of each: applied, off (by the policy), unavailable (this kernel or
machine lacks it) or failed (asked for and refused); nothing fails silently:

1. ``PR_SET_PDEATHSIG`` SIGKILL: the child dies with its parent. Under forkserver the parent is the fork server,
   which exits when the daemon dies, but only once no child holds its "alive" pipe: a fork server's child closes
   its copy here. If the parent died before the call, the child was already re-parented and would never get
   the signal: then it exits at once (``EXIT_ORPHANED``).
2. Resource limits (process-wide): ``RLIMIT_AS`` (soft and hard: a decompression bomb gets MemoryError, the
   daemon keeps its memory), ``RLIMIT_CPU`` (a backstop to the parent's wall-clock deadline; SIGXCPU, a second
   later SIGKILL), ``RLIMIT_CORE`` 0 (no core file of decoded pixels), ``RLIMIT_NOFILE`` (new descriptors, e.g.
   ``dup`` in a loop, cost kernel memory outside RLIMIT_AS). Not ``RLIMIT_NPROC``: it counts every process of the
   user, the daemon's threads included; the filter's clone rule is the tool. The limits are set with
   ``prlimit64``, as glibc's setrlimit does (systemd 252's ``~@resources`` denies ``setrlimit(2)`` only). A
   unit's filter that denies ``prlimit64`` too (EPERM) fails the limit's step, with the reason.
3. ``PR_SET_NO_NEW_PRIVS``: required for unprivileged Landlock and seccomp; exec could not gain privileges.
4. Landlock (kernel >= 5.13): a ruleset handling every right of the kernel's ABI, with no rule: no file can be
   opened (to read, write or execute), no directory listed or changed; open descriptors are not affected. Where
   the ABI has them, TCP bind/connect are denied too (ABI 4) and signals and abstract Unix sockets stay inside
   the sandbox (ABI 6). See ``landlock.py``.
5. seccomp (``seccomp_filter.py``, pyseccomp over libseccomp.so.2): an allow-list; anything else gets EPERM, so a
   harmless unexpected call from the runtime fails softly.

   Allowed: read, pread64, readv, write, writev, lseek, close, fcntl, dup, dup2, dup3, fstat, newfstatat, statx
   (descriptors it holds; glibc's fstat is newfstatat with AT_EMPTY_PATH; a path stat shows metadata, not
   content); ioctl only TCGETS, FIONBIO, FIOCLEX, FIONCLEX (isatty, set_blocking, set_inheritable); sendmsg,
   recvmsg, sendto, recvfrom, getsockname, getpeername, getsockopt, shutdown (the inherited socket;
   multiprocessing.connection; SCM_RIGHTS brings new inputs); mmap and mprotect without PROT_EXEC (no new
   executable memory), munmap, mremap, madvise, brk; futex, set_robust_list, rseq, clone with CLONE_THREAD and
   no namespace flag (a thread inherits the filter and the Landlock domain); rt_sigaction, rt_sigprocmask,
   rt_sigreturn, sigaltstack, restart_syscall, kill and tgkill of its own pid (raise, abort); exit, exit_group;
   poll, ppoll, select, pselect6, clock_gettime, clock_getres, clock_nanosleep, nanosleep, gettimeofday,
   sched_yield, sched_getaffinity; getpid, gettid, getppid, getuid, geteuid, getgid, getegid, getrandom,
   getrusage.

   Killed (SECCOMP_RET_KILL_PROCESS, the parent sees -SIGSYS), what an exploit wants next: execve, execveat (run
   a program); ptrace, process_vm_readv, process_vm_writev (another process); socket, connect, bind, listen,
   accept, accept4 (the network); fork, vfork, clone without CLONE_THREAD (a new process); keyctl, add_key,
   request_key, bpf, perf_event_open, userfaultfd, io_uring_setup (kernel attack surface; io_uring would also
   bypass this filter); mount, umount2, pivot_root, chroot, unshare, setns, open_by_handle_at (namespaces and
   mounts, the classic escapes). A call made through another ABI (x86 ``int 0x80``, x32) is killed too.

   clone3 gets ENOSYS: its flags are in memory a filter cannot read, and glibc falls back to clone.
"""
from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import sys
from dataclasses import dataclass

from ..errors import SandboxError
from . import landlock, seccomp_filter

APPLIED, OFF, UNAVAILABLE, FAILED = "applied", "off", "unavailable", "failed"
EXIT_ORPHANED = 70  # the parent died before PR_SET_PDEATHSIG took effect
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class SandboxPolicy:
    address_space_bytes: int | None   # RLIMIT_AS, soft and hard
    cpu_seconds: int | None = None     # RLIMIT_CPU backstop (the parent also enforces a wall-clock deadline)
    open_files: int | None = 64        # RLIMIT_NOFILE: the highest descriptor number + 1 the child may get
    no_files: bool = True              # Landlock: no file-system access at all after this
    seccomp: bool = True               # the allow-list syscall filter, where pyseccomp and libseccomp are

    def __post_init__(self) -> None:
        for name in ("address_space_bytes", "cpu_seconds", "open_files"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"SandboxPolicy.{name} must be positive or None, not {value}")


@dataclass(frozen=True)
class Step:
    name: str     # pdeathsig, threads, RLIMIT_AS, RLIMIT_CPU, RLIMIT_CORE, RLIMIT_NOFILE, no_new_privs, ...
    status: str   # APPLIED, OFF, UNAVAILABLE or FAILED
    detail: str = ""


@dataclass(frozen=True)
class SandboxReport:
    steps: tuple[Step, ...]

    def __getitem__(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def failed(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.status == FAILED)

    @property
    def unavailable(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.status == UNAVAILABLE)

    def summary(self) -> str:
        """One log line: ``sandbox: pdeathsig applied; RLIMIT_AS applied (268435456); ...``."""
        return "sandbox: " + "; ".join(f"{s.name} {s.status}" + (f" ({s.detail})" if s.detail else "")
                                       for s in self.steps)

    def require(self, *, allow_unavailable: bool = False) -> None:
        """SandboxError unless every step the policy asked for took effect (or, if allowed, is unavailable)."""
        missing = self.failed + (() if allow_unavailable else self.unavailable)
        if missing:
            raise SandboxError(tuple(s.name for s in missing), self.summary())


def apply_sandbox(policy: SandboxPolicy, *, parent_pid: int | None = None) -> SandboxReport:
    """Lock this process down by ``policy``, in the order of the module's docstring; what took effect.

    ``parent_pid`` is the parent the child expects (``os.getppid()`` as early as possible, or the pid the parent
    passed); by default the parent at this call. The caller decides what a failed step means
    (``report.require()``); the remaining steps are applied in any case.
    """
    expected_parent = os.getppid() if parent_pid is None else parent_pid
    libc = ctypes.CDLL(None, use_errno=True)  # this process's libc: nothing is opened
    steps = [_die_with_parent(libc, expected_parent)]
    # Everything that needs the file system happens before Landlock: /proc, libseccomp.so.2, termios.
    steps.append(_single_thread())
    built = _build_seccomp(policy)
    steps += _limits(policy)
    steps.append(_prctl_step(libc, "no_new_privs", _PR_SET_NO_NEW_PRIVS, 1))
    steps.append(_landlock() if policy.no_files else Step("landlock", OFF))
    steps.append(built if isinstance(built, Step) else _load_seccomp(*built))
    return SandboxReport(tuple(steps))


def _single_thread() -> Step:
    try:
        threads = len(os.listdir(f"/proc/{os.getpid()}/task"))
    except OSError as e:
        return Step("threads", FAILED, f"cannot count them: {_errno_text(e.errno)}")
    if threads == 1:
        return Step("threads", APPLIED, "1")
    return Step("threads", FAILED, f"{threads} threads: Landlock and the prctl flags hold for the calling one only")


def _prctl(libc: ctypes.CDLL, option: int, value: int) -> int:
    """0, or the errno of prctl(option, value, 0, 0, 0)."""
    args = (ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return 0 if libc.prctl(ctypes.c_int(option), *args) == 0 else ctypes.get_errno()


def _prctl_step(libc: ctypes.CDLL, name: str, option: int, value: int) -> Step:
    err = _prctl(libc, option, value)
    return Step(name, APPLIED) if err == 0 else Step(name, FAILED, _errno_text(err))


def _die_with_parent(libc: ctypes.CDLL, expected_parent: int) -> Step:
    step = _prctl_step(libc, "pdeathsig", _PR_SET_PDEATHSIG, signal.SIGKILL)
    # The race: a parent that died before prctl sends no signal; the child has a new parent by now.
    if os.getppid() != expected_parent:
        os._exit(EXIT_ORPHANED)
    released = _release_fork_server()
    return Step(step.name, step.status, "; ".join(filter(None, (step.detail, released))))


def _release_fork_server() -> str:
    """Under forkserver, let the fork server exit with the daemon, so that this child's PDEATHSIG fires.

    The fork server exits at EOF on its "alive" pipe, but it hands every child a copy of the pipe's write end
    (for processes of its own, which this child may not start): while a child holds it, the fork server
    outlives the daemon, and so does the child. multiprocessing keeps it in a private attribute (3.9-3.13).
    """
    forkserver = sys.modules.get("multiprocessing.forkserver")
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    # In the daemon the fork server's pid is known; in a child of the fork server it is not (it was exec'd).
    if fd is None or getattr(server, "_forkserver_pid", None) is not None:
        return ""
    os.close(fd)
    server._forkserver_alive_fd = None
    return "a fork server's child: released its alive pipe, so it exits with the daemon"


def _limits(policy: SandboxPolicy) -> list[Step]:
    cpu = policy.cpu_seconds
    wanted = [("RLIMIT_AS", resource.RLIMIT_AS, policy.address_space_bytes, policy.address_space_bytes),
              # The soft limit sends SIGXCPU (fatal by default); the hard one a second later SIGKILL, in case the
              # signal is handled or ignored. CPU time counts from the process's start, imports included.
              ("RLIMIT_CPU", resource.RLIMIT_CPU, cpu, None if cpu is None else cpu + 1),
              ("RLIMIT_CORE", resource.RLIMIT_CORE, 0, 0),
              ("RLIMIT_NOFILE", resource.RLIMIT_NOFILE, policy.open_files, policy.open_files)]
    return [_set_limit(name, which, soft, hard) for name, which, soft, hard in wanted]


def _set_limit(name: str, which: int, soft: int | None, hard: int | None) -> Step:
    if soft is None or hard is None:
        return Step(name, OFF)
    try:
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY and current_hard < hard:
            # Already stricter than asked: keep it (raising a hard limit needs CAP_SYS_RESOURCE).
            soft, hard = min(soft, current_hard), current_hard
        # prlimit, not setrlimit: CPython turns setrlimit's EPERM into ValueError("not allowed to raise maximum
        # limit"), which is wrong here. Lowering a limit needs no privilege, so EPERM means a filter refused.
        resource.prlimit(0, which, (soft, hard))
    except OSError as e:
        reason = _errno_text(e.errno)
        if e.errno == errno.EPERM:
            reason += " (denied by a seccomp filter such as systemd's SystemCallFilter=~@resources?)"
        return Step(name, FAILED, reason)
    except ValueError as e:
        return Step(name, FAILED, str(e))
    return Step(name, APPLIED, str(soft) if soft == hard else f"soft {soft}, hard {hard}")


def _landlock() -> Step:
    try:
        result = landlock.deny_all_files()
    except OSError as e:
        return Step("landlock", FAILED, f"{e.filename}: {_errno_text(e.errno)}")
    return Step("landlock", APPLIED if result.enforced else UNAVAILABLE, result.detail)


def _build_seccomp(policy: SandboxPolicy) -> tuple[object, tuple[str, ...]] | Step:
    """The filter and the names libseccomp does not know, to load last; or the seccomp step, if there is none."""
    if not policy.seccomp:
        return Step("seccomp", OFF)
    try:
        return seccomp_filter.prepare()
    except seccomp_filter.SeccompUnavailable as e:
        return Step("seccomp", UNAVAILABLE, str(e))
    except OSError as e:
        return Step("seccomp", FAILED, f"building the filter: {_errno_text(e.errno)}")


def _load_seccomp(built: object, unknown: tuple[str, ...]) -> Step:
    try:
        seccomp_filter.load(built)
    except OSError as e:
        # EINVAL: a kernel without seccomp filters; ESRCH: another thread has an unrelated filter (TSYNC).
        return Step("seccomp", FAILED, f"seccomp_load: {_errno_text(e.errno)}")
    detail = f"{len(seccomp_filter.ALLOWED)} allowed, {len(seccomp_filter.KILLED)} killed"
    return Step("seccomp", APPLIED, detail + (f"; unknown to libseccomp: {', '.join(unknown)}" if unknown else ""))


def _errno_text(err: int | None) -> str:
    if not err:
        return "unknown error"
    return f"{errno.errorcode.get(err, err)}: {os.strerror(err)}"
