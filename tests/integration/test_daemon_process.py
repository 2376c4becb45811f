"""The daemon as systemd runs it: a real subprocess, a real NOTIFY_SOCKET, real signals, real HTTP."""
from __future__ import annotations

import shutil
import signal
import socket
import time

import pytest
import yaml

from tests.support.cli import run_cli
from tests.support.daemon import daemon, free_port, http_status, wait_for, waiting, write_config
from tests.support.images import write_images
from tests.support.sd_notify import recv_all


def test_notify_ready_watchdog_and_a_graceful_drain_on_sigterm(tmp_path, notify_socket):
    port = free_port()
    cfg = write_config(tmp_path, metrics={"port": port})
    path, sock = notify_socket
    with daemon(cfg, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}) as proc:
        lines = recv_all(sock, "READY=1", 60)
        assert http_status(port, "/readyz") == 200  # READY=1 only once ready
        assert any(line.startswith("STATUS=") for line in lines)
        recv_all(sock, "WATCHDOG=1", 5)  # fed while the idle inference loop is healthy
        imgs = write_images(tmp_path / "staging", 20, size=(400, 300))
        for p in imgs:
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        time.sleep(0.3)  # some in flight, most not yet
        proc.send_signal(signal.SIGTERM)
        recv_all(sock, "STOPPING=1", 10)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    # Nothing half-done: every input is either acknowledged with a complete result, or still in the inbox.
    done = {p.name for p in (tmp_path / "done").glob("*")} if (tmp_path / "done").exists() else set()
    left = waiting(tmp_path / "inbox")  # in the inbox, or claimed there (finished first at the next start)
    assert done | left == {p.name for p in imgs} and not done & left
    for name in done:
        assert yaml.safe_load((tmp_path / "results" / "drops" / f"{name}.json").read_text())["status"] == "ok"
    assert not list((tmp_path / "results").rglob(".*.tmp"))


def test_sigint_twice_forces_a_quick_exit(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, metrics={"port": port})
    with daemon(cfg) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
        assert proc.returncode == 0


def test_readyz_is_503_while_draining(tmp_path):
    port = free_port()
    # A drain long enough to look at: many large PNGs (slow to decode) through one worker.
    cfg = write_config(tmp_path, metrics={"port": port}, pipeline={"workers": 1}, batch={"max_size": 1})
    with daemon(cfg) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        for p in write_images(tmp_path / "staging", 60, size=(1600, 1200), fmt="png"):
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: (tmp_path / "done").exists(), 30, "work under way")
        proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: http_status(port, "/readyz") == 503, 10, "503 while draining")
        assert http_status(port, "/healthz") == 200  # alive while draining
        proc.communicate(timeout=60)
        assert proc.returncode == 0


def test_bad_config_exits_78_naming_the_key(tmp_path):
    cfg = write_config(tmp_path, batch={"max_size": 0})
    r = run_cli("run", "-c", str(cfg))
    assert r.returncode == 78 and "batch.max_size" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("check-config", "-c", str(cfg))
    assert r.returncode == 78 and "batch.max_size: must be >= 1" in r.stderr
    good = write_config(tmp_path)
    assert run_cli("check-config", "-c", str(good)).returncode == 0


def test_port_in_use_exits_78_naming_metrics_port(tmp_path):
    # 78, not 1: restarting every 2 s (the unit's RestartSec) cannot free another program's port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = write_config(tmp_path, metrics={"port": port})
        r = run_cli("run", "-c", str(cfg))
    assert r.returncode == 78 and "Traceback" not in r.stderr, r.stderr
    assert f"metrics.port: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr


def test_a_hung_inference_loop_stops_the_watchdog_and_fails_healthz(tmp_path, notify_socket):
    # The session is made to block as a wedged onnxruntime call would; nothing else is faked.
    import threading

    from edge_infer.ops.systemd import Notifier
    from tests.support.daemon import RunningApp
    from tests.support.images import write_images

    path, sock = notify_socket
    cfg = write_config(tmp_path)
    release = threading.Event()
    with RunningApp(cfg, notifier=Notifier(path, watchdog_usec=400_000), hang_timeout_s=1.0) as run:
        recv_all(sock, "WATCHDOG=1", 5)
        session = run.app.stages.inference[0].session
        real_run = session.run
        session.run = lambda batch: (release.wait(30), real_run(batch))[1]
        shutil.copyfile(write_images(tmp_path / "staging", 1)[0], tmp_path / "inbox" / "x.jpg")
        wait_for(lambda: run.get("/healthz")[0] == 503, 10, "healthz 503 once hung")
        drain_until = time.monotonic() + 0.5
        while time.monotonic() < drain_until:  # pings sent before the hang was noticed
            try:
                sock.recv(4096)
            except socket.timeout:
                pass
        with pytest.raises(AssertionError):
            recv_all(sock, "WATCHDOG=1", 1.5)  # systemd would now restart the service
        release.set()
        wait_for(lambda: run.get("/healthz")[0] == 200, 10, "healthy again")
        recv_all(sock, "WATCHDOG=1", 5)


def test_a_missing_or_corrupt_model_is_refused_as_config_not_restarted(tmp_path):
    from edge_infer.classifier.manifest import default_model_path

    cfg = write_config(tmp_path, model={"path": "models/nope.onnx"})
    for cmd in ("check-config", "run"):
        r = run_cli(cmd, "-c", str(cfg))
        assert r.returncode == 78 and "model.path" in r.stderr and "nope.onnx does not exist" in r.stderr, r.stderr
    (tmp_path / "models").mkdir()
    shutil.copy(default_model_path().with_name("model.json"), tmp_path / "models" / "model.json")
    (tmp_path / "models" / "bad.onnx").write_bytes(b"\x08\x07 not a model")
    cfg = write_config(tmp_path, model={"path": "models/bad.onnx"})
    r = run_cli("run", "-c", str(cfg))
    assert r.returncode == 78 and "model.path" in r.stderr and "sha256" in r.stderr and "Traceback" not in r.stderr
