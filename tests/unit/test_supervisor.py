"""ops.supervisor.Supervisor with real threads: restart intensity, escalation, hangs, jobs given back; the one
shutdown Deadline; the unit's TimeoutStopSec against shutdown.drain_timeout_s."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import yaml

from edge_infer.config import load_config
from edge_infer.errors import ConfigError
from edge_infer.lifecycle import InjectedFault, Stage
from edge_infer.ops.supervisor import SHUTDOWN_MARGIN_S, Deadline, Probe, Supervisor
from edge_infer.ops.faults import Faults
from edge_infer.ops.systemd import check_stop_timeout, parse_timespan, unit_stop_timeout
from tests.support.daemon import wait_for
from tests.support.paths import ROOT


class Looper(Stage):
    """A loop that holds ``job`` from its first turn on, as a worker holds its input."""

    poll_s = 0.02

    def __init__(self, name: str = "loop", job: object = None) -> None:
        super().__init__(name)
        self.job, self.turns = job, 0
        self.block = threading.Event()

    def run(self) -> None:
        while self.should_keep_running():
            if self.job is not None:
                self.in_hand = [self.job]
            self.turns += 1
            while self.block.is_set():
                time.sleep(0.01)  # wedged, as in a call that never returns: no heartbeat, deaf to stop()
            self.wait(self.poll_s)


def _supervise(stage: Stage, faults: str = "", **kw) -> tuple[Supervisor, list[str], list[object]]:
    restarts: list[str] = []
    given: list[object] = []
    sup = Supervisor(on_restart=restarts.append, give_back=given.append,
                     fault_for=Faults.from_environ({"EDGE_INFER_FAULTS": faults}).stage_fault, **kw)
    sup.watch(stage)
    stage.start()
    return sup, restarts, given


def _check_until(sup: Supervisor, pred, what: str) -> None:
    def step():
        sup.check()
        return pred()
    wait_for(step, 10, what)


def test_a_dead_stage_is_restarted_and_what_it_held_given_back():
    job = object()
    stage = Looper(job=job)
    stage.kind = "writer"
    sup, restarts, given = _supervise(stage, "kill_busy=writer:2")
    _check_until(sup, lambda: len(restarts) == 2 and stage.alive() and stage.turns > 3, "two restarts")
    assert restarts == ["writer", "writer"] and given == [job, job]
    assert isinstance(stage.failure, type(None)) and sup.healthy()
    stage.stop()
    assert stage.join(5)


def test_more_deaths_than_the_restart_intensity_escalate_and_stay_escalated():
    stage = Looper()
    stage.kind = "inference"
    sup, restarts, _ = _supervise(stage, "kill_stage=inference:4", max_restarts=3, window_s=60)
    _check_until(sup, lambda: "loop" in sup.failed, "escalated")
    assert len(restarts) == 3 and not sup.healthy()
    assert "died 4 times within 60s" in sup.failed["loop"] and isinstance(stage.failure, InjectedFault)
    sup.check()
    assert not sup.healthy()  # latched: only systemd's restart of the daemon clears it


def test_restarts_older_than_the_window_are_forgiven():
    stage = Looper()
    stage.kind = "writer"
    sup, restarts, _ = _supervise(stage, "kill_stage=writer:3", max_restarts=1, window_s=0.0)
    _check_until(sup, lambda: len(restarts) == 3 and stage.alive(), "three restarts, each alone in its window")
    assert sup.healthy()
    stage.stop()
    assert stage.join(5)


def test_a_stage_that_may_not_be_restarted_fails_at_once():
    stage = Looper()
    stage.kind, stage.restartable = "reloader", False
    sup, restarts, _ = _supervise(stage, "kill_stage=reloader")
    wait_for(lambda: not stage.alive(), 10, "dead")
    assert not sup.healthy()  # before the next check, too
    sup.check()
    assert restarts == [] and "is not restarted in place" in sup.failed["loop"]


def test_a_hung_loop_is_not_alive_until_it_beats_again():
    stage = Looper()
    stage.hang_s = 0.3
    sup, _, _ = _supervise(stage)
    assert sup.healthy()
    stage.block.set()
    _check_until(sup, lambda: sup.problems() == ["loop hung"], "hung")
    stage.block.clear()
    _check_until(sup, sup.healthy, "beating again")
    stage.stop()
    assert stage.join(5)


def test_a_stopped_stage_is_not_a_death():
    stage = Looper()
    sup, restarts, _ = _supervise(stage)
    stage.stop()
    assert stage.join(5)
    sup.check()
    assert sup.healthy() and restarts == []


def test_a_probe_is_killed_by_its_hook_and_restarted():
    threads: list[threading.Thread] = []
    stop = threading.Event()

    def spawn() -> None:
        t = threading.Thread(target=stop.wait, args=(30,))
        threads.append(t)
        t.start()

    spawn()
    probe = Probe("observer", "obs", lambda: threads[-1].is_alive(), restart=spawn, inject=stop.set)
    restarts: list[str] = []
    sup = Supervisor(on_restart=restarts.append, fault_for=Faults(kill_stage="observer").stage_fault)
    sup.watch(probe)
    sup.check()  # the hook fires: the probed thread ends
    threads[0].join(5)
    stop.clear()
    sup.check()
    assert restarts == ["observer"] and probe.alive() and sup.healthy()
    stop.set()
    for t in threads:
        t.join(5)


def test_the_deadline_bounds_a_join_and_a_second_signal_cuts_it():
    wedged = Looper()
    wedged.block.set()
    wedged.start()
    wedged.stop()
    assert not Deadline(0.3, threading.Event()).join(wedged)
    force = threading.Event()
    deadline = Deadline(600, force)
    threading.Timer(0.2, force.set).start()
    assert not deadline.join(wedged)  # returned after the cut, not after 600 s (the test would time out)
    assert deadline.left() == 0
    wedged.block.clear()
    assert wedged.join(5)


def test_timespans_as_systemd_writes_them():
    assert parse_timespan("30") == 30 and parse_timespan("30s") == 30 and parse_timespan("1min 30s") == 90
    assert parse_timespan("500ms") == 0.5 and parse_timespan("infinity") == float("inf")
    with pytest.raises(ValueError):
        parse_timespan("soon")


def test_the_shipped_unit_and_the_default_config_agree(tmp_path):
    unit = ROOT / "systemd" / "edge-infer.service"
    drain = load_config(ROOT / "config" / "edge-infer.yaml").shutdown.drain_timeout_s
    assert unit_stop_timeout(unit) >= drain + SHUTDOWN_MARGIN_S
    check_stop_timeout(drain, unit)
    short = tmp_path / "short.service"
    short.write_text(unit.read_text() + "\n[Service]\nTimeoutSec=1min\nTimeoutStopSec=20s\n")
    with pytest.raises(ConfigError, match="shutdown.drain_timeout_s"):
        check_stop_timeout(drain, short)


def test_check_config_refuses_a_drain_longer_than_the_units_stop_timeout(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"sources": [{"name": "drops", "type": "folder", "path": "inbox", "done_dir": "done",
                                                "failed_dir": "failed"}],
                                   "output": {"dir": "results"}, "shutdown": {"drain_timeout_s": 40}}))
    unit = tmp_path / "edge-infer.service"
    unit.write_text("[Service]\nTimeoutStopSec=30\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "edge_infer", "check-config", "-c", str(cfg), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60, cwd=ROOT)
    r = run("--unit", str(unit))
    assert r.returncode == 78 and "shutdown.drain_timeout_s" in r.stderr and "TimeoutStopSec=30s" in r.stderr
    unit.write_text("[Service]\nTimeoutStopSec=1min\n")
    assert run("--unit", str(unit)).returncode == 0
