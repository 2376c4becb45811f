"""A real decoder-like child for tests/unit/test_sandbox.py: ``python sandbox_child.py SCENARIO [ARG]``.

It imports what a decoder needs (numpy with one OpenBLAS thread, Pillow and all its plugins), applies the
sandbox to itself and reports from inside, as one JSON line on stdout. Scenarios that should be killed print
``armed`` first, so that the test knows the sandbox was in place when the call was made.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import reduction

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy: OpenBLAS would start a thread per core
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from edge_infer.decoding.sandbox import SandboxPolicy, SandboxReport, apply_sandbox  # noqa: E402
from edge_infer.errors import SandboxError  # noqa: E402

Image.init()  # every plugin now: Pillow imports them lazily, which the sandbox would refuse
CAP = 512 << 20  # this interpreter with numpy and Pillow maps ~120 MB
POLICY = SandboxPolicy(address_space_bytes=CAP, cpu_seconds=60)


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def steps(report: SandboxReport) -> dict[str, dict[str, str]]:
    return {s.name: dataclasses.asdict(s) for s in report.steps}


def errno_of(call) -> int | None:
    try:
        call()
    except OSError as e:
        return e.errno
    return None


def report(jpeg: str, policy: SandboxPolicy) -> None:
    """From inside: /proc files opened before, re-read; a new open; an old descriptor; a decode; memory."""
    status = os.open("/proc/self/status", os.O_RDONLY)
    limits = os.open("/proc/self/limits", os.O_RDONLY)
    image = os.open(jpeg, os.O_RDONLY)
    before = os.pread(limits, 65536, 0).decode()
    result = apply_sandbox(policy)
    after_status = os.pread(status, 65536, 0).decode()  # procfs regenerates the text on a read at offset 0
    after_limits = os.pread(limits, 65536, 0).decode()
    with os.fdopen(image, "rb") as f:
        im = Image.open(f)
        im.load()
    pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    try:
        bytearray(2 * CAP)
        too_much = "allocated"
    except MemoryError:
        too_much = "MemoryError"
    small = len(bytearray(64 << 20))  # under the cap, allocation still works
    say(steps=steps(result), status=after_status, limits_before=before, limits=after_limits,
        open_errno=errno_of(lambda: open("/etc/hostname", "rb")),
        listdir_errno=errno_of(lambda: os.listdir("/")),
        create_errno=errno_of(lambda: open(f"/tmp/sandbox-child-{os.getpid()}", "wb")),
        old_fd=os.pread(status, 5, 0).decode(), size=list(im.size), mean=float(pixels.mean()),
        too_much=too_much, small=small)


def thread() -> None:
    apply_sandbox(POLICY)
    seen = []
    t = threading.Thread(target=lambda: seen.append(threading.get_ident()))
    t.start()
    t.join()
    say(thread_ran=len(seen) == 1)


def killed(call: str) -> None:
    apply_sandbox(POLICY)
    say(armed=True)
    if call == "execv":
        os.execv(sys.executable, [sys.executable, "-c", "pass"])
    elif call == "socket":
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    elif call == "fork":
        os.fork()
    say(survived=True)


def systemd_filter(denied: str) -> None:
    """Under a unit's filter that answers the comma-separated ``denied`` calls with EPERM, as systemd's
    SystemCallFilter=~@resources with SystemCallErrorNumber=EPERM does for setrlimit."""
    import errno

    import pyseccomp
    f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in denied.split(","):
        f.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    f.load()
    result = apply_sandbox(POLICY)
    try:
        result.require()
        refused = None
    except SandboxError as e:
        refused = list(e.steps)
    say(steps=steps(result), refused=refused, summary=result.summary())


def threads_before() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    result = apply_sandbox(SandboxPolicy(address_space_bytes=None, no_files=False, seccomp=False))
    stop.set()
    t.join()
    say(steps=steps(result))


def orphan() -> None:
    apply_sandbox(POLICY, parent_pid=os.getppid() + 1)  # as if re-parented before PR_SET_PDEATHSIG
    say(survived=True)


def sleeper() -> None:
    apply_sandbox(POLICY)
    say(ready=os.getpid())
    time.sleep(60)  # only a signal ends this early


def middle() -> None:
    """The sleeper's parent, to be SIGKILLed by the test: the sleeper must die with it."""
    child = subprocess.Popen([sys.executable, __file__, "sleeper"], stdout=subprocess.PIPE, text=True)
    sys.stdout.write(child.stdout.readline())
    sys.stdout.flush()
    time.sleep(60)


def decoder(conn: multiprocessing.connection.Connection, then_sleep: bool) -> None:
    """A forkserver child, the production shape: it receives its input's descriptor after the sandbox."""
    result = apply_sandbox(POLICY)
    conn.send((os.getpid(), steps(result)))
    if then_sleep:
        time.sleep(60)  # not conn.recv(): the parent's death would end that by EOF, not by the signal
    fd = reduction.recv_handle(conn)  # SCM_RIGHTS over the inherited socket
    with os.fdopen(fd, "rb") as f:
        im = Image.open(f)
        im.load()
    conn.send((list(im.size), float(np.asarray(im.convert("RGB"), dtype=np.float32).mean())))


def forkserver_decode(jpeg: str) -> None:
    ctx = multiprocessing.get_context("forkserver")
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=decoder, args=(theirs, False))
    p.start()
    theirs.close()
    _, sandbox = ours.recv()
    fd = os.open(jpeg, os.O_RDONLY)
    reduction.send_handle(ours, fd, p.pid)
    os.close(fd)
    size, mean = ours.recv()
    p.join(10)
    say(steps=sandbox, size=size, mean=mean, exitcode=p.exitcode)


def forkserver_middle() -> None:
    """A daemon whose decoder runs under the fork server: when the daemon dies, the fork server exits (EOF on
    its alive pipe) and the decoder, the fork server's child, gets its PR_SET_PDEATHSIG."""
    ctx = multiprocessing.get_context("forkserver")
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=decoder, args=(theirs, True))
    p.start()
    pid, _ = ours.recv()
    say(ready=pid)
    time.sleep(60)


SCENARIOS = {
    "report": lambda args: report(args[0], POLICY),
    "landlock-only": lambda args: report(args[0], SandboxPolicy(address_space_bytes=CAP, seccomp=False)),
    "thread": lambda args: thread(),
    "killed": lambda args: killed(args[0]),
    "systemd-filter": lambda args: systemd_filter(args[0]),
    "threads-before": lambda args: threads_before(),
    "orphan": lambda args: orphan(),
    "sleeper": lambda args: sleeper(),
    "middle": lambda args: middle(),
    "forkserver-decode": lambda args: forkserver_decode(args[0]),
    "forkserver-middle": lambda args: forkserver_middle(),
}

if __name__ == "__main__":  # the fork server imports this module too (as __mp_main__): nothing runs then
    SCENARIOS[sys.argv[1]](sys.argv[2:])
