"""The decoder process: what runs on the far side of the pipe, under its sandbox.

It imports what decoding needs (Pillow and its plugins, numpy, the preprocessing code) and nothing else
(no onnxruntime, no watchdog, no sockets), maps the daemon's tensor file from a descriptor, locks itself
down, and then serves one request at a time: a descriptor of an input the daemon opened, the slot to write
its crop into. It answers with the crop's size and the input's sha256, or with the error that input gets.

Everything a stranger's bytes can do to this process (crash it, exhaust its memory, hang it) costs this
process only: the daemon replaces it and fails that one input.
"""
from __future__ import annotations

import errno
import hashlib
import mmap
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any

from ..errors import InputError
from ..pipeline.input_file import read_open
from ..pipeline.tensor_pool import Layout, layout_bytes, slot_views
from .preprocess import PreprocessSpec, crop_pixels
from .sandbox import SandboxPolicy, apply_sandbox

READY = "ready"
OUT_OF_MEMORY = "decoding needed more memory than a decoder may use (pipeline.max_decode_mb)"


@dataclass(frozen=True)
class DecoderSettings:
    """Everything a decoder process is told at start (pickled once, when it is created)."""

    spec: PreprocessSpec
    max_pixels: int
    max_bytes: int  # pipeline.max_file_bytes
    pool_layout: Layout  # TensorPool.layout()
    decode_options: dict[str, Any] = field(default_factory=dict)  # crop_pixels' keyword options
    memory_headroom_bytes: int | None = None  # RLIMIT_AS: what the decoder has mapped once set up, plus this
    sandbox: bool = True  # no_new_privs, no file system, the syscall filter


def _lock_down(settings: DecoderSettings) -> dict[str, Any]:
    """Apply the sandbox; what took effect (``{step: (status, detail)}``), for the daemon's log and tests."""
    cap, fds = None, []
    try:
        if settings.memory_headroom_bytes is not None:
            cap = _mapped_bytes() + settings.memory_headroom_bytes
        # Opened before, read after: what the kernel says of this process once it is locked down.
        fds = [os.open(f"/proc/self/{name}", os.O_RDONLY | os.O_CLOEXEC) for name in ("status", "limits")]
    except OSError as e:  # no /proc (a chroot without it): no cap can be sized, nothing can be verified
        missing = f"no /proc: {e.strerror or e}"
    try:
        report = apply_sandbox(SandboxPolicy(address_space_bytes=cap, no_files=settings.sandbox,
                                             seccomp=settings.sandbox))
        steps: dict[str, Any] = {s.name: (s.status, s.detail) for s in report.steps}
        if len(fds) == 2:
            steps["verified"] = ("applied", _verify(*fds))
        else:
            steps["RLIMIT_AS"] = ("failed", missing) if settings.memory_headroom_bytes else steps["RLIMIT_AS"]
            steps["verified"] = ("unavailable", missing)
    finally:
        for fd in fds:
            os.close(fd)
    return steps


def _verify(status_fd: int, limits_fd: int) -> str:
    """The sandbox as seen from inside: procfs regenerates a file's text on each read at offset 0."""
    text = os.pread(status_fd, 1 << 16, 0).decode() + os.pread(limits_fd, 1 << 16, 0).decode()
    seen = [line.split(None, 1)[0].rstrip(":") + " " + line.split(None, 1)[1].strip()
            for line in text.splitlines() if line.startswith(("NoNewPrivs:", "Seccomp:"))]
    seen += [" ".join(line.split()[:5]) for line in text.splitlines() if line.startswith("Max address space")]
    try:
        os.close(os.open("/", os.O_RDONLY | os.O_DIRECTORY))
        seen.append("open / allowed")
    except OSError as e:
        seen.append(f"open / {errno.errorcode.get(e.errno or 0, e.errno)}")
    return ", ".join(seen)


def _mapped_bytes() -> int:
    """This process's address space now (VmSize): the cap is sized from it, so that the interpreter's and
    the libraries' mappings, which differ between machines, never count against the image's budget."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def _prefer_to_be_killed() -> None:
    """If memory runs out, the kernel kills a decoder (costing one input), not the daemon (costing all).
    Raising one's own oom_score_adj needs no privilege."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass  # no /proc (or a read-only one): the cgroup's MemoryMax still bounds the service


def decode_one(fd: int, size: int, out: Any, settings: DecoderSettings) -> tuple[Any, ...]:
    """``("ok", sha256, width, height, seconds)`` or ``("error", sha256, kind, message, seconds)``.

    Read by the daemon's own reader (``input_file.read_open``), so a file still growing, or shrinking, is
    read as the daemon has always read it, within ``pipeline.max_file_bytes``.
    """
    t0 = time.monotonic()
    sha: str | None = None
    try:
        data = read_open(fd, size, settings.max_bytes)
        sha = hashlib.sha256(data).hexdigest()
        p = crop_pixels(data, settings.spec, settings.max_pixels, out=out, **settings.decode_options)
        return "ok", sha, p.width, p.height, time.monotonic() - t0
    except InputError as e:
        return "error", sha, e.kind, e.message, time.monotonic() - t0
    except MemoryError:
        return "error", sha, "too_large", OUT_OF_MEMORY, time.monotonic() - t0
    except Exception as e:  # noqa: BLE001 - whatever a decoder raises on a stranger's bytes is that input's
        return "error", sha, "decode", f"cannot decode: {type(e).__name__}: {e}", time.monotonic() - t0


def main(conn: Connection, settings: DecoderSettings) -> None:
    """The process's whole life: set up, lock down, serve until told to stop (``None``) or the pipe closes."""
    # Ctrl-C in a terminal signals the whole process group: the daemon drains and stops its decoders itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _prefer_to_be_killed()
    pool_fd = recv_handle(conn)
    tensors = slot_views(mmap.mmap(pool_fd, layout_bytes(settings.pool_layout)), settings.pool_layout)
    os.close(pool_fd)  # the mapping stays
    from PIL import Image

    Image.init()  # every plugin (the forkserver did it already): none could be imported without a file system
    report = _lock_down(settings) if settings.sandbox or settings.memory_headroom_bytes else {}
    conn.send((READY, os.getpid(), report))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return  # the daemon is gone
        if msg is None:
            return
        slot, size = msg
        fd = recv_handle(conn)
        try:
            reply = decode_one(fd, size, tensors[slot], settings)
        finally:
            os.close(fd)
        # After a MemoryError the heap may be in pieces: a fresh process serves the next input.
        exiting = reply[0] == "error" and reply[3] == OUT_OF_MEMORY
        conn.send((*reply, exiting))
        if exiting:
            return
