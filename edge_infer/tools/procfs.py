"""A process's CPU time and memory, read from ``/proc``: what the benchmarks measure the daemon by.

The daemon runs as a separate process, so its own counters are the only honest measure of what it costs;
reading ``/proc`` needs no library and takes no CPU from the process being measured.
"""
from __future__ import annotations

import glob
import os
from typing import Callable

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int, reaped_children: bool = False) -> float:
    """User + system CPU of ``pid``; with ``reaped_children``, also of its children that ended and were
    waited for (the kernel adds theirs to the parent's ``cutime``/``cstime``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if reaped_children else 0)
    return ticks / CLK_TCK


def _field_mb(path: str, key: str) -> float:
    """The ``key:   123 kB`` line of a /proc file, in MB; 0 when the file has none."""
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    return _field_mb(f"/proc/{pid}/status", key)


def proc_pss_mb(pid: int) -> float:
    """One process's proportional set size: its private pages plus its share of each page it maps with
    others. Unlike RSS, summing it over processes counts a shared library once."""
    return _field_mb(f"/proc/{pid}/smaps_rollup", "Pss")


def proc_children(pid: int) -> list[int]:
    """The direct children of every thread of ``pid`` (a child belongs to the thread that started it)."""
    children = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as f:
                children += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return children


def _tree_sum(pid: int, read: Callable[[int], float]) -> float:
    """``read`` summed over ``pid`` and all its descendants; a process that ends mid-walk is skipped."""
    total, todo = 0.0, [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen:  # a pid that ended and was reused mid-walk may show up twice
            continue
        seen.add(p)
        try:
            total += read(p)
        except (FileNotFoundError, ProcessLookupError):  # reaped, or a zombie
            continue
        todo += proc_children(p)
    return total


def tree_pss_mb(pid: int) -> float:
    """PSS of ``pid`` and all its descendants: the memory the process tree costs the machine (a process
    that ended has freed its memory, and a zombie has none to count)."""
    return _tree_sum(pid, proc_pss_mb)


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and all its descendants, those that ended and were reaped inside the tree included
    (a decoder replaced mid-run is charged to the forkserver that waited for it)."""
    return _tree_sum(pid, lambda p: proc_cpu_seconds(p, reaped_children=True))
