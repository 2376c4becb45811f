"""The /proc readers on real processes: a process tree's PSS is its members' sum, and processes that end
mid-walk (zombies, reaped pids) are skipped rather than failing the reading."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable

import pytest

from edge_infer.tools.procfs import proc_children, proc_pss_mb, tree_pss_mb

# A Python process that starts a shell that runs `sleep 30` (`; :` keeps the shell from exec'ing sleep), prints
# the shell's pid and waits for stdin to close; it does not reap the shell, so a dead shell stays a zombie.
TREE = ("import subprocess, sys; sh = subprocess.Popen(['sh', '-c', 'sleep 30; :']); "
        "print(sh.pid, flush=True); sys.stdin.read()")


def _wait(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def tree():
    root = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        sh = int(root.stdout.readline())
        _wait(lambda: proc_children(sh))
        yield root.pid, sh, proc_children(sh)[0]
    finally:
        root.kill()
        root.wait()


def test_a_trees_pss_is_its_members_sum(tree):
    root, sh, sleep = tree
    assert proc_children(root) == [sh]
    members = proc_pss_mb(root) + proc_pss_mb(sh) + proc_pss_mb(sleep)
    total = tree_pss_mb(root)
    assert total > proc_pss_mb(root)
    assert total > tree_pss_mb(sh) > proc_pss_mb(sh) > 0
    assert total == pytest.approx(members, abs=0.5)  # read at different moments: shared pages' shares move


def test_processes_that_ended_are_skipped(tree):
    root, sh, sleep = tree
    os.kill(sleep, 9)
    _wait(lambda: _state(sh) == "Z")  # the shell reaped sleep and exited; nobody reaps the shell
    assert proc_children(root) == [sh]
    with pytest.raises(ProcessLookupError):
        proc_pss_mb(sh)
    assert tree_pss_mb(root) == pytest.approx(proc_pss_mb(root), abs=0.5)


def test_a_reaped_pid_has_no_memory():
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert tree_pss_mb(gone.pid) == 0.0


def test_the_tree_cpu_counts_children_alive_and_reaped():
    from edge_infer.tools.procfs import proc_cpu_seconds, tree_cpu_seconds

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    # A middle process whose first child burns and is reaped, and whose second burns and waits to be killed.
    code = (f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {burn!r}])\n"
            f"p = subprocess.Popen([sys.executable, '-c', {burn!r} + 'import time; time.sleep(30)'])\n"
            "print(p.pid, flush=True)\np.wait()\n")
    middle = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(middle.stdout.readline())
    try:
        deadline = time.monotonic() + 10
        while proc_cpu_seconds(child) < 0.29 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_seconds(middle.pid) >= 0.55 > proc_cpu_seconds(middle.pid)
    finally:
        os.kill(child, 9)
        middle.wait(10)
