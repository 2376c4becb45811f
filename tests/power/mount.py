"""Start, cut and stop a cutfs mount (tests/power/cutfs.py) from a test or the power-cut runner."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

CUTFS = Path(__file__).with_name("cutfs.py")
MOUNT_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 30.0


def unavailable() -> str | None:
    """Why cutfs cannot run here, or None."""
    if os.geteuid() != 0:
        return "cutfs mounts FUSE as root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as e:  # OSError: mfusepy found no libfuse (Debian's libfuse3-3, fuse3)
        return f"mfusepy or libfuse3 missing: {e}"
    if shutil.which("fusermount3") is None and shutil.which("umount") is None:
        return "no umount"
    return None


class Mount:
    """``disk`` (the backing folder, the disk itself) mounted at ``mountpoint`` through cutfs."""

    def __init__(self, disk: Path, mountpoint: Path, log: Path | None = None) -> None:
        self.disk, self.mountpoint = disk, mountpoint
        self.control = str(disk.parent / f".{disk.name}.cutfs.sock")
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.disk.mkdir(parents=True, exist_ok=True)
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(CUTFS), str(self.disk), str(self.mountpoint), "--control", self.control]
        if self.log is None:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            with open(self.log, "ab") as out:  # the child keeps its own descriptor
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=out)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while not (os.path.ismount(self.mountpoint) and os.path.exists(self.control)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"cutfs exited with {self.proc.returncode} (log: {self.log})")
            if time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError(f"cutfs did not mount {self.mountpoint} in {MOUNT_TIMEOUT_S:.0f} s")
            time.sleep(0.02)

    def command(self, cmd: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(COMMAND_TIMEOUT_S)
            s.connect(self.control)
            s.sendall(cmd.encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return reply.decode().strip()

    def stats(self) -> dict:
        return json.loads(self.command("stats"))

    def cut(self) -> None:
        """The power goes: from now on every operation fails with EIO; the unmount that follows writes the
        durable state back (``unmount``)."""
        if self.command("cut") != "ok":
            raise RuntimeError("cutfs refused the cut")

    def unmount(self) -> None:
        """Take the mount away (lazily: a killed process may still hold a descriptor) and wait for cutfs to
        write the disk as it is after the cut, or leave it as it is after a clean unmount."""
        assert self.proc is not None
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)
        try:
            self.proc.wait(COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise RuntimeError(f"cutfs did not exit {COMMAND_TIMEOUT_S:.0f} s after the unmount of {self.mountpoint}: "
                               "a process still holds a file open on it (a lazy unmount waits for the last one)")
        finally:
            self.proc = None
        if os.path.exists(self.control):
            os.unlink(self.control)
