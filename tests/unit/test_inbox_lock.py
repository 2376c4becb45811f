"""The inbox lock with real flocks: two holders in one process conflict as two daemons do (a flock
belongs to the open file description), a killed holder's lock is gone at once, and a read-only inbox
can be locked by an unprivileged user."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge_infer.config import load_config
from edge_infer.errors import ConfigError
from edge_infer.sources.inbox_lock import InboxLocks


def _config(tmp_path: Path, name: str, *paths: str, recursive: bool = True):
    f = tmp_path / f"{name}.yaml"
    sources = [{"name": f"s{i}", "type": "folder", "path": p, "after": "keep",
                "failed_dir": f"{name}-failed{i}", "recursive": recursive}
               for i, p in enumerate(paths)]
    f.write_text(yaml.safe_dump({"sources": sources, "output": {"dir": f"{name}-results"}}))
    return load_config(f)


@pytest.fixture
def held():
    locks: list[InboxLocks] = []

    def hold(config) -> InboxLocks:
        lock = InboxLocks()
        lock.hold(config)
        locks.append(lock)
        return lock

    yield hold
    for lock in locks:
        lock.release()


def test_a_second_holder_is_refused_naming_the_inbox_and_the_pid(tmp_path, held):
    first = held(_config(tmp_path, "a", "in", "other"))
    with pytest.raises(ConfigError) as info:
        held(_config(tmp_path, "b", "elsewhere", "in"))
    assert info.value.key == "sources[1].path"
    assert str(tmp_path / "in") in info.value.message and f"pid {os.getpid()}" in info.value.message
    held(_config(tmp_path, "c", "elsewhere"))  # the refused one let go of what it had taken
    first.release()
    held(_config(tmp_path, "b", "elsewhere2", "in"))


def test_the_inbox_is_made_when_missing(tmp_path, held):
    held(_config(tmp_path, "a", "new/inbox"))
    assert (tmp_path / "new" / "inbox").is_dir()


def test_nested_inboxes_conflict_whichever_comes_first(tmp_path, held):
    inner = held(_config(tmp_path, "a", "data/cam"))
    with pytest.raises(ConfigError) as info:
        held(_config(tmp_path, "b", "data"))
    assert str(tmp_path / "data") in info.value.message
    assert f"pid {os.getpid()}" in info.value.message
    inner.release()
    held(_config(tmp_path, "b", "data"))
    with pytest.raises(ConfigError) as info:
        held(_config(tmp_path, "a", "data/cam"))
    assert info.value.key == "sources[0].path" and str(tmp_path / "data") in info.value.message


def test_sibling_inboxes_and_one_daemons_own_nesting_are_fine(tmp_path, held):
    held(_config(tmp_path, "a", "data/one"))
    held(_config(tmp_path, "b", "data/two"))
    held(_config(tmp_path, "c", "top", "top/sub", recursive=False))  # its own inbox above another


def test_a_killed_holder_leaves_no_lock(tmp_path, held):
    config = _config(tmp_path, "a", "in")
    code = ("import time; from edge_infer.config import load_config; "
            "from edge_infer.sources.inbox_lock import InboxLocks; "
            f"InboxLocks().hold(load_config({str(config.path)!r})); print('held', flush=True); "
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError) as info:
            held(config)
        assert f"pid {child.pid}" in info.value.message
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        held(config)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_a_read_only_inbox_is_locked_by_an_unprivileged_user(tmp_path):
    for folder in (tmp_path, *tmp_path.parents[:2]):  # pytest's base folders are root's own (0700)
        folder.chmod(0o755)
    inbox = tmp_path / "in"
    inbox.mkdir()
    inbox.chmod(0o555)  # not writable by anyone but root: after: keep needs no more
    config = _config(tmp_path, "a", "in")
    pid = os.fork()
    if pid == 0:  # the child: nobody, who may read the inbox and not write it
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            lock = InboxLocks()
            lock.hold(config)
            code = 0 if not os.access(inbox, os.W_OK) else 2
            lock.release()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_file_system_that_refuses_flock_runs_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def refuse(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refuse)
    lock = InboxLocks()
    lock.hold(_config(tmp_path, "a", "in"))
    lock.release()
    assert f"cannot lock {tmp_path / 'in'}" in caplog.text
