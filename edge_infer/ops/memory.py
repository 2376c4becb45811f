"""Memory on a small device: hand freed heap back to the OS, and find the limit the process lives under."""
from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from typing import Callable


def heap_trimmer() -> Callable[[], None]:
    """A function that returns free heap pages to the OS (glibc ``malloc_trim``); a no-op elsewhere.

    Each image allocates and frees a few megabytes (file bytes, decoded and resized pictures) on several
    threads; glibc keeps the freed pages, fragmented, in per-thread heaps. Trimming after batches took the
    daemon's peak from 156 MB to 148 MB (``edge-infer bench``, 200 photos); the first inference thread calls it
    at most every 0.2 s while batches follow each other, and once after a second idle (see inference.py).
    """
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: None if trim(0) else None


# cgroup v1 reports "no limit" as a huge page-aligned number; anything at or above this is no limit.
_NO_LIMIT = 1 << 60


def memory_limit_bytes(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory this process may use: the smallest cgroup limit over its cgroup and their parents
    (``MemoryMax=`` in a unit, a container's limit), else the machine's total memory; None off Linux.

    The paths are parameters so that tests can point them at a fake ``/proc`` and cgroup tree.
    """
    limits = [_mem_total(proc / "meminfo")]
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for fields in (line.split(":", 2) for line in lines):
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: one unified hierarchy
            limits += _walk_up(cgroup_root, path, "memory.max")
        elif "memory" in controllers.split(","):  # cgroup v1: the memory controller's own hierarchy
            limits += _walk_up(cgroup_root / "memory", path, "memory.limit_in_bytes")
    return min((v for v in limits if v is not None), default=None)


def _walk_up(mount: Path, cgroup: str, name: str) -> list[int | None]:
    """The limit file of the cgroup and of every ancestor up to the mount: each one applies."""
    parts = [p for p in cgroup.split("/") if p]
    return [_read_limit(mount.joinpath(*parts[:n]) / name) for n in range(len(parts), -1, -1)]


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None  # not mounted here, or hidden (a container often shows only part of the tree)
    if not text.isdigit() or int(text) >= _NO_LIMIT:
        return None  # "max" (v2) or the v1 sentinel: no limit at this level
    return int(text)


def _mem_total(meminfo: Path) -> int | None:
    try:
        text = meminfo.read_text()
    except OSError:
        return None  # not Linux: no limit known
    fields = next((line.split() for line in text.splitlines() if line.startswith("MemTotal:")), [])
    return int(fields[1]) * 1024 if len(fields) > 1 and fields[1].isdigit() else None
