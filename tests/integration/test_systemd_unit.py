"""The shipped unit file: valid for systemd, Type=notify with the settings the daemon relies on."""
from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest

from tests.support.paths import ROOT

UNIT = ROOT / "systemd" / "edge-infer.service"


def read_unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment]
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_settings_match_what_the_daemon_does():
    s = read_unit()["Service"]
    assert s["Type"] == "notify" and s["Restart"] == "on-failure" and s["RestartPreventExitStatus"] == "78"
    assert int(s["WatchdogSec"]) >= 10 and s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    assert s["PrivateTmp"] == "yes" and s["StateDirectory"] == "edge-infer" and s["User"] == "edge-infer"
    # The drain (20 s by default in config/edge-infer.yaml) plus ordered joins must fit in TimeoutStopSec.
    assert int(s["TimeoutStopSec"]) >= 25
    # RestartPreventExitStatus covers only the main process: a failing ExecStartPre would be restarted in a
    # loop (seen under a real systemd, tests/system). A ConfigurationDirectory would be writable to the service.
    assert "ExecStartPre" not in s and "ConfigurationDirectory" not in s


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian: systemd)")
def test_systemd_analyze_verify_passes(tmp_path):
    # verify also checks that ExecStart exists; point it at a stand-in so the check runs without /opt.
    exe = tmp_path / "edge-infer"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "edge-infer.service"
    unit.write_text(UNIT.read_text().replace("/opt/edge-infer/bin/edge-infer", str(exe)))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze (Debian: systemd)")
def test_sandbox_exposure_is_ok_or_better(tmp_path):
    unit = tmp_path / "edge-infer.service"
    shutil.copy(UNIT, unit)
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=30", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:]
    score = float(r.stdout.split("Overall exposure level for edge-infer.service:")[1].split()[0])
    assert score <= 3.0, score
