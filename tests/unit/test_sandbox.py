"""The decoder child's sandbox, in real child processes (tests/support/sandbox_child.py) that report from inside.

Each feature's tests skip, with the reason, only where this kernel lacks it (Landlock, seccomp filters).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_infer.decoding import landlock, sandbox, seccomp_filter
from edge_infer.decoding.sandbox import FAILED, SandboxPolicy, SandboxReport, Step
from edge_infer.errors import SandboxError

CHILD = Path(__file__).resolve().parents[1] / "support" / "sandbox_child.py"
JPEG = Path(sandbox.__file__).resolve().parents[1] / "models" / "selftest" / "robin.jpg"


def _landlock_reason() -> str | None:
    try:
        landlock.abi_version()
    except landlock.LandlockUnavailable as e:
        return f"this kernel has no Landlock ({e})"
    return None


def _seccomp_reason() -> str | None:
    with open("/proc/self/status") as f:
        return None if "Seccomp:" in f.read() else "this kernel has no seccomp (no Seccomp: in /proc/self/status)"


needs_landlock = pytest.mark.skipif(_landlock_reason() is not None, reason=_landlock_reason() or "")
needs_seccomp = pytest.mark.skipif(_seccomp_reason() is not None, reason=_seccomp_reason() or "")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=timeout)


def said(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    return json.loads(proc.stdout.splitlines()[-1])


def proc_field(text: str, key: str) -> str:
    return re.search(rf"^{re.escape(key)}:\s*(.*)$", text, re.M).group(1).strip()


@needs_landlock
@needs_seccomp
def test_the_full_sandbox_as_seen_from_inside():
    out = said(run("report", str(JPEG)))
    assert {name: s["status"] for name, s in out["steps"].items()} == {
        name: "applied" for name in ("pdeathsig", "threads", "RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_CORE",
                                     "RLIMIT_NOFILE", "no_new_privs", "landlock", "seccomp")}
    # The /proc files were opened before the sandbox and re-read after it: procfs regenerated them.
    cap = str(512 << 20)
    assert re.search(rf"^Max address space\s+{cap}\s+{cap}\s+bytes", out["limits"], re.M), out["limits"]
    assert not re.search(rf"^Max address space\s+{cap}", out["limits_before"], re.M)
    assert re.search(r"^Max core file size\s+0\s+0\s", out["limits"], re.M)
    assert re.search(r"^Max cpu time\s+60\s+61\s", out["limits"], re.M)
    assert re.search(r"^Max open files\s+64\s+64\s", out["limits"], re.M)
    assert proc_field(out["status"], "NoNewPrivs") == "1"
    assert proc_field(out["status"], "Seccomp") == "2"
    # New opens fail (EPERM from the filter first; Landlock's EACCES behind it), open descriptors still read.
    assert out["open_errno"] in (1, 13) and out["listdir_errno"] in (1, 13) and out["create_errno"] in (1, 13)
    assert out["old_fd"] == "Name:"
    # A real JPEG decoded from a descriptor opened before, with Pillow's plugins imported before.
    assert out["size"] == [341, 256] and 0 < out["mean"] < 255
    assert out["too_much"] == "MemoryError" and out["small"] == 64 << 20


@needs_landlock
def test_landlock_alone_denies_every_new_open_with_eacces():
    out = said(run("landlock-only", str(JPEG)))
    assert out["steps"]["landlock"]["status"] == "applied" and out["steps"]["seccomp"]["status"] == "off"
    assert proc_field(out["status"], "Seccomp") == "0"
    # EACCES is Landlock's answer (the filter, were it there, would say EPERM first).
    assert out["open_errno"] == 13 and out["listdir_errno"] == 13 and out["create_errno"] == 13
    assert out["size"] == [341, 256]


@needs_landlock
@needs_seccomp
@pytest.mark.parametrize("call", ["execv", "socket", "fork"])
def test_what_an_exploit_wants_kills_the_child_with_sigsys(call):
    proc = run("killed", call)
    assert proc.returncode == -signal.SIGSYS, (proc.returncode, proc.stdout, proc.stderr)
    assert '"armed": true' in proc.stdout and "survived" not in proc.stdout


@needs_landlock
@needs_seccomp
def test_a_thread_can_still_start_under_the_sandbox():
    assert said(run("thread")) == {"thread_ran": True}


@needs_landlock
@needs_seccomp
def test_a_forkserver_child_decodes_a_descriptor_received_after_the_sandbox():
    out = said(run("forkserver-decode", str(JPEG)))
    assert not [s for s in out["steps"].values() if s["status"] != "applied"], out["steps"]
    assert out["size"] == [341, 256] and out["exitcode"] == 0


@needs_seccomp
def test_limits_refused_by_the_units_filter_are_reported_not_assumed():
    out = said(run("systemd-filter", "setrlimit,prlimit64"))
    for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_CORE", "RLIMIT_NOFILE"):
        assert out["steps"][name]["status"] == "failed", out["steps"][name]
        assert out["steps"][name]["detail"].startswith("EPERM")
    assert set(out["refused"]) == {"RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_CORE", "RLIMIT_NOFILE"}
    assert out["steps"]["seccomp"]["status"] == "applied"  # the rest still took effect
    assert "RLIMIT_AS failed (EPERM" in out["summary"]


@needs_seccomp
def test_denying_setrlimit_alone_does_not_stop_the_limits():
    """systemd 252's @resources holds setrlimit but not prlimit64, which is in @default (`systemd-analyze
    syscall-filter`): the limits are set with prlimit64, as glibc's own setrlimit does."""
    out = said(run("systemd-filter", "setrlimit"))
    assert out["refused"] is None, out["summary"]


def test_a_second_thread_fails_the_threads_step():
    out = said(run("threads-before"))
    assert out["steps"]["threads"]["status"] == "failed"
    assert out["steps"]["threads"]["detail"].startswith("2 threads")


def test_a_child_whose_parent_changed_exits_at_once():
    proc = run("orphan")
    assert proc.returncode == sandbox.EXIT_ORPHANED and "survived" not in proc.stdout, proc


def _gone(pid: int, within: float) -> bool:
    """Dead (no process, or a zombie nobody has reaped yet) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("middle", ["middle", "forkserver-middle"])
def test_the_child_dies_with_its_parent(middle):
    parent = subprocess.Popen([sys.executable, str(CHILD), middle], stdout=subprocess.PIPE, text=True)
    grandchild = None
    try:
        grandchild = json.loads(parent.stdout.readline())["ready"]
        assert not _gone(grandchild, 0.2)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _gone(grandchild, 2.0), f"pid {grandchild} outlived its parent"
    finally:
        parent.kill()
        parent.wait(10)
        parent.stdout.close()
        if grandchild and not _gone(grandchild, 0):
            os.kill(grandchild, signal.SIGKILL)


def test_the_report_names_what_did_not_take_effect():
    report = SandboxReport((Step("pdeathsig", "applied"), Step("RLIMIT_AS", FAILED, "EPERM: no"),
                            Step("landlock", "unavailable", "ENOSYS")))
    assert report.summary() == "sandbox: pdeathsig applied; RLIMIT_AS failed (EPERM: no); landlock unavailable (ENOSYS)"
    assert report["RLIMIT_AS"].detail == "EPERM: no"
    with pytest.raises(SandboxError) as e:
        report.require()
    assert e.value.steps == ("RLIMIT_AS", "landlock")
    with pytest.raises(SandboxError) as e:
        report.require(allow_unavailable=True)
    assert e.value.steps == ("RLIMIT_AS",)


def test_a_policy_rejects_a_nonsense_limit():
    with pytest.raises(ValueError, match="address_space_bytes"):
        SandboxPolicy(address_space_bytes=0)


def test_landlock_handles_every_right_of_each_abi():
    assert landlock.handled_rights(1) == ((1 << 13) - 1, 0, 0)
    assert landlock.handled_rights(3) == ((1 << 15) - 1, 0, 0)
    assert landlock.handled_rights(4) == ((1 << 15) - 1, 0b11, 0)
    assert landlock.handled_rights(7) == ((1 << 16) - 1, 0b11, 0b11)


def test_the_docstring_lists_every_allowed_and_killed_call():
    """The README quotes sandbox.py's docstring: it must say what the filter does."""
    words = set(re.findall(r"[a-z_0-9]+", sandbox.__doc__))
    extra = {"mmap", "mprotect", "clone", "clone3", "ioctl", "kill", "tgkill"}
    missing = [n for n in (*seccomp_filter.ALLOWED, *seccomp_filter.KILLED, *extra) if n not in words]
    assert not missing, missing


def test_the_filter_builds_for_aarch64_too():
    """The Raspberry Pi's filter, built here: aarch64's own numbers, its missing calls (fork) skipped."""
    import tempfile

    import pyseccomp
    built, unknown = seccomp_filter.build_filter(os.getpid(), pyseccomp.Arch.AARCH64)
    assert unknown == ()
    with tempfile.TemporaryFile("w+") as f:
        built.export_pfc(f)
        f.seek(0)
        pfc = f.read()
    assert f"if ($arch == {pyseccomp.Arch.AARCH64})" in pfc and "x86_64" not in pfc
    rule = r'# filter for syscall "{}" \({}\).*\n.*\n\s+action {}'
    assert re.search(rule.format("read", 63, "ALLOW"), pfc)         # x86_64: 0
    assert re.search(rule.format("execve", 221, "KILL_PROCESS"), pfc)  # x86_64: 59
    assert re.search(rule.format("socket", 198, "KILL_PROCESS"), pfc)
    assert "action ERRNO(1);" in pfc  # the default
