"""The memory limit the daemon reports, read from a fake /proc and cgroup tree (client_python's way)."""
from __future__ import annotations

from pathlib import Path

from edge_infer.ops.memory import memory_limit_bytes

GIB = 2**30


def _proc(root: Path, cgroup: str, mem_total_kb: int | None = 4 * 2**20) -> Path:
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup)
    if mem_total_kb is not None:
        (proc / "meminfo").write_text(f"MemTotal:       {mem_total_kb} kB\nMemFree:         1000 kB\n")
    return proc


def _limit(folder: Path, name: str, value: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(value + "\n")


def test_without_a_cgroup_limit_it_is_the_machines_memory(tmp_path):
    proc = _proc(tmp_path, "0::/system.slice/edge-infer.service\n")
    cg = tmp_path / "cgroup"
    _limit(cg / "system.slice" / "edge-infer.service", "memory.max", "max")
    assert memory_limit_bytes(proc, cg) == 4 * GIB


def test_cgroup_v2_memory_max_of_the_unit_or_a_parent_whichever_is_smaller(tmp_path):
    proc = _proc(tmp_path, "0::/system.slice/edge-infer.service\n")
    cg = tmp_path / "cgroup"
    _limit(cg / "system.slice" / "edge-infer.service", "memory.max", str(512 * 2**20))
    assert memory_limit_bytes(proc, cg) == 512 * 2**20
    _limit(cg / "system.slice", "memory.max", str(256 * 2**20))
    assert memory_limit_bytes(proc, cg) == 256 * 2**20


def test_cgroup_v1_memory_controller_and_its_no_limit_sentinel(tmp_path):
    proc = _proc(tmp_path, "5:cpu:/\n4:memory:/docker/abc\n0::/\n")
    cg = tmp_path / "cgroup"
    _limit(cg / "memory", "memory.limit_in_bytes", "9223372036854771712")  # v1's "no limit"
    assert memory_limit_bytes(proc, cg) == 4 * GIB
    _limit(cg / "memory" / "docker" / "abc", "memory.limit_in_bytes", str(GIB))
    assert memory_limit_bytes(proc, cg) == GIB


def test_nothing_readable_is_no_limit_known(tmp_path):
    proc = _proc(tmp_path, "garbage line\n", mem_total_kb=None)
    assert memory_limit_bytes(proc, tmp_path / "nowhere") is None


def test_the_real_machine_reports_a_plausible_limit():
    limit = memory_limit_bytes()
    assert limit is not None and 64 * 2**20 < limit
