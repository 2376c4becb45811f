"""A Debian root file system booted under systemd-nspawn, driven from outside with nsenter.

The host need not run systemd: ``--register=no --keep-unit`` asks nothing of a host systemd, and commands
enter the container's namespaces from its systemd's PID (``nsenter -t PID -a``), not through machinectl.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Container:
    """One booted container; ``run`` executes a command inside it as root with a clean environment."""

    def __init__(self, root: Path, log: Path, binds: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.root = root
        self.log = log
        self.binds = binds
        self.env = {"PATH": PATH, "LANG": "C.UTF-8", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def boot(self, timeout: float = 180) -> str:
        """Starts the container and waits until its systemd has finished booting; returns its state."""
        cmd = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=passive",
               "-D", str(self.root), *(f"--bind={b}" for b in self.binds)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.pid:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"container did not start: {self.log.read_text()[-2000:]}")
            self.pid = _container_init(self.proc.pid)
            time.sleep(0.2)
        r = self.run("systemctl", "is-system-running", "--wait", check=False,
                     timeout=max(10.0, deadline - time.monotonic()))
        return r.stdout.strip()

    def run(self, *cmd: str, check: bool = True, timeout: float = 120, input: str | None = None,
            ) -> subprocess.CompletedProcess[str]:
        env = [f"{k}={v}" for k, v in self.env.items()]
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "--", "env", "-i", *env, *cmd],
                           capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run("bash", "-euo", "pipefail", "-c", script, check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def poweroff(self, timeout: float = 60) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.pid:
            subprocess.run(["nsenter", "-t", str(self.pid), "-a", "--", "env", "-i", f"PATH={PATH}",
                            "systemctl", "poweroff", "--no-block"], capture_output=True, timeout=30)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # nspawn takes the whole container down with it
            self.proc.wait(30)


def _container_init(nspawn_pid: int) -> int:
    """The PID (on the host) of the container's PID 1: a descendant of nspawn that is PID 1 in its namespace."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    todo = list(children.get(nspawn_pid, []))
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) > 1 and nspid[-1] == "1" and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
            return pid
        todo.extend(children.get(pid, []))
    return 0
