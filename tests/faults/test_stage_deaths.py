"""Every stage's death, caused from outside with ``EDGE_INFER_FAULTS`` (off unless a test sets it), in the real
daemon: a subprocess with a real NOTIFY_SOCKET, real /healthz and /metrics scrapes, real signals.

Each stage is either healed (restarted in place, counted in ``edge_infer_stage_restarts_total{stage}``, and
photos dropped afterwards still get results) or detected (/healthz fails and WATCHDOG=1 stops, so that
systemd restarts the daemon). The daemon never reports healthy while nothing moves.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from edge_infer.classifier.manifest import default_model_path, sha256_file
from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.images import write_images
from tests.support.metrics import metric

WATCHDOG_USEC = "600000"  # pings every 0.3 s: a silence of 3 s is ten missed pings


def _drain(sock: socket.socket) -> list[str]:
    got: list[str] = []
    try:
        while True:
            got.extend(sock.recv(4096).decode().splitlines())
    except socket.timeout:
        return got


def _pings_within(sock: socket.socket, seconds: float) -> int:
    """WATCHDOG=1 datagrams received over the next ``seconds``."""
    n, until = 0, time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            n += sock.recv(4096).decode().splitlines().count("WATCHDOG=1")
        except socket.timeout:
            continue
    return n


@contextmanager
def _daemon(tmp_path: Path, notify_socket: Any, faults: str, sources: list[dict[str, Any]] | None = None,
            **sections: Any) -> Iterator[tuple[subprocess.Popen, int, socket.socket]]:
    port = free_port()
    (tmp_path / "inbox").mkdir(exist_ok=True)
    cfg = write_config(tmp_path, sources, metrics={"port": port}, **sections)
    path, sock = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": WATCHDOG_USEC, "EDGE_INFER_FAULTS": faults}
    with daemon(cfg, env) as proc:
        wait_for(lambda: "READY=1" in _drain(sock) or proc.poll() is not None, 90, "READY=1")
        assert proc.poll() is None, proc.communicate()[0]
        yield proc, port, sock


def _drop(tmp_path: Path, n: int, prefix: str) -> list[str]:
    names = []
    for i, p in enumerate(write_images(tmp_path / "staging" / prefix, n, seed=hash(prefix) % 1000)):
        name = f"{prefix}{i}.jpg"
        os.replace(p, tmp_path / "inbox" / name)
        names.append(name)
    return names


def _results(tmp_path: Path, names: list[str]) -> None:
    folder = tmp_path / "results" / "drops"
    wait_for(lambda: all((folder / f"{n}.json").exists() for n in names), 60, f"results for {names}")
    for n in names:
        assert json.loads((folder / f"{n}.json").read_text())["status"] == "ok"


def _restarts(port: int, kind: str) -> float:
    return metric(port, f'edge_infer_stage_restarts_total{{stage="{kind}"}}')


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return out


# -- healed: restarted in place ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["writer", "inference", "preprocess", "source", "observer", "reloader"])
def test_a_dead_stage_is_restarted_in_place_and_photos_still_get_results(tmp_path, notify_socket, kind):
    with _daemon(tmp_path, notify_socket, f"kill_stage={kind}") as (proc, port, sock):
        wait_for(lambda: _restarts(port, kind) == 1, 30, f"the {kind} restarted")
        _results(tmp_path, _drop(tmp_path, 6, "after"))
        assert http_status(port, "/healthz") == 200
        _drain(sock)
        assert _pings_within(sock, 2) > 0  # systemd's watchdog is still fed
        assert metric(port, "edge_infer_inputs_in_flight") == 0
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert "InjectedFault: injected fault: kill_stage=" + kind in out or kind == "observer"  # with its traceback
    assert "restarting it (1 of at most 5 within 60s)" in out


@pytest.mark.parametrize("kind", ["preprocess", "inference"])
def test_a_stage_that_dies_with_inputs_in_hand_gives_them_back_and_they_are_redone(tmp_path, notify_socket, kind):
    # The first photo is in the dying stage's hands: given back and offered again, not in flight forever.
    with _daemon(tmp_path, notify_socket, f"kill_busy={kind}:2") as (proc, port, sock):
        names = _drop(tmp_path, 8, "busy")
        _results(tmp_path, names)
        assert _restarts(port, kind) == 2
        wait_for(lambda: metric(port, "edge_infer_inputs_in_flight") == 0, 10, "nothing in flight")
        assert {p.name for p in (tmp_path / "done").iterdir()} == set(names)
        out = _stop(proc)
    assert proc.returncode == 0, out  # the drain did not wait for inputs nobody holds
    assert "was in hand of a stage that died; offered again" in out


def test_a_dead_camera_thread_is_restarted(tmp_path, notify_socket):
    pytest.importorskip("av", reason="cameras need PyAV (the camera extra)")
    sources = [{"name": "cam", "type": "camera", "url": "/dev/video63", "reconnect_min_s": 0.2,
                "reconnect_max_s": 1},
               {"name": "drops", "type": "folder", "path": "inbox", "done_dir": "done", "failed_dir": "failed"}]
    with _daemon(tmp_path, notify_socket, "kill_stage=camera", sources) as (proc, port, sock):
        wait_for(lambda: _restarts(port, "camera") == 1, 30, "the camera restarted")
        assert http_status(port, "/healthz") == 200
        _results(tmp_path, _drop(tmp_path, 2, "cam"))
        out = _stop(proc)
    assert proc.returncode == 0, out


def test_a_dead_regions_stage_is_restarted_and_the_folder_goes_on(tmp_path, notify_socket):
    pytest.importorskip("av", reason="cameras need PyAV (the camera extra)")
    sources = [{"name": "cam", "type": "camera", "url": "/dev/video63", "reconnect_min_s": 0.2,
                "reconnect_max_s": 1, "regions": [{"name": "whole", "crop": [0, 0, 1, 1]}]},
               {"name": "drops", "type": "folder", "path": "inbox", "done_dir": "done",
                "failed_dir": "failed"}]
    with _daemon(tmp_path, notify_socket, "kill_stage=regions", sources) as (proc, port, sock):
        wait_for(lambda: _restarts(port, "regions") == 1, 30, "the regions stage restarted")
        assert http_status(port, "/healthz") == 200
        assert metric(port, 'edge_infer_region_state{region="whole",source="cam",state="unknown"}') == 1
        _results(tmp_path, _drop(tmp_path, 2, "rg"))
        out = _stop(proc)
    assert proc.returncode == 0, out


def test_a_dead_mqtt_publisher_is_restarted_and_publishes(tmp_path, notify_socket):
    pytest.importorskip("paho.mqtt", reason="needs paho-mqtt")
    from tests.support.mqtt import Broker, Subscriber, mosquitto_path

    mosquitto_path()
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port) as sub:
        mqtt = {"host": "127.0.0.1", "port": broker.port, "device": "dev1", "reconnect_max_s": 1}
        with _daemon(tmp_path, notify_socket, "kill_stage=publisher", output={"mqtt": mqtt}) as (proc, port, _):
            wait_for(lambda: _restarts(port, "publisher") == 1, 30, "the publisher restarted")
            names = _drop(tmp_path, 3, "mq")
            _results(tmp_path, names)
            wait_for(lambda: metric(port, "edge_infer_mqtt_acked_total") >= 3, 30, "the results published")
            assert http_status(port, "/healthz") == 200
            out = _stop(proc)
        assert proc.returncode == 0, out
        assert sub.messages


# -- detected: the daemon reports itself not alive ----------------------------------------------------------------
def _assert_watchdog_stops(sock: socket.socket) -> None:
    """No WATCHDOG=1 for 3 s (ten ping intervals), after those already on their way."""
    time.sleep(0.5)
    _drain(sock)
    assert _pings_within(sock, 3) == 0


def test_a_stage_dying_more_often_than_its_restart_intensity_fails_healthz_and_stops_the_watchdog(
        tmp_path, notify_socket):
    with _daemon(tmp_path, notify_socket, "kill_stage=writer:6") as (proc, port, sock):
        wait_for(lambda: http_status(port, "/healthz") == 503, 30, "/healthz 503")
        assert _restarts(port, "writer") == 5
        _assert_watchdog_stops(sock)
        assert http_status(port, "/healthz") == 503  # latched: systemd restarts the daemon
        out = _stop(proc)
    assert "stage writer died 6 times within 60s" in out
    assert "/healthz 503, no WATCHDOG=1" in out


def test_a_dead_http_server_stops_the_watchdog(tmp_path, notify_socket):
    # Not restarted in place: /healthz cannot answer at all, and WATCHDOG=1 stops.
    with _daemon(tmp_path, notify_socket, "kill_stage=http") as (proc, port, sock):
        wait_for(lambda: http_status(port, "/healthz") == 0, 30, "the HTTP server gone")
        _assert_watchdog_stops(sock)
        out = _stop(proc)
    assert "stage http died" in out and "is not restarted in place" in out
    assert _restarts_in_log(out) == 0


def _restarts_in_log(out: str) -> int:
    return out.count("restarting it (")


# -- the reloader survives what is not a ModelError ---------------------------------------------------------------
def _model_failing_at_run(folder: Path) -> None:
    """Loads (so it is no ModelError) but onnxruntime fails as it runs: a Reshape that cannot fit the logits."""
    onnx = pytest.importorskip("onnx", reason="making a model needs the onnx package (the export extra)")
    src = default_model_path()
    manifest = json.loads(src.with_name("model.json").read_text())
    model = onnx.load(str(src))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{out}_raw" if o == out else o for o in node.output]
    model.graph.initializer.append(onnx.helper.make_tensor("bad_shape", onnx.TensorProto.INT64, [2], [-1, 999]))
    model.graph.node.append(onnx.helper.make_node("Reshape", [f"{out}_raw", "bad_shape"], [out]))
    del model.graph.output[0].type.tensor_type.shape.dim[:]
    onnx.save(model, str(folder / "model.onnx.new"))
    manifest["sha256"] = sha256_file(folder / "model.onnx.new")
    (folder / "model.json.new").write_text(json.dumps(manifest))
    os.replace(folder / "model.json.new", folder / "model.json")
    os.replace(folder / "model.onnx.new", folder / "model.onnx")


def test_the_reloader_survives_an_onnxruntime_error_and_a_later_sighup_still_reloads(tmp_path, notify_socket):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(default_model_path().with_name(name), model_dir / name)
    with _daemon(tmp_path, notify_socket, "", model={"path": str(model_dir / "model.onnx")}) as (proc, port, _):
        _model_failing_at_run(model_dir)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: metric(port, 'edge_infer_model_reloads_total{outcome="failed"}') == 1, 60, "refused")
        for name in ("model.json", "model.onnx"):  # the shipped model again, as an operator would put it back
            shutil.copy(default_model_path().with_name(name), model_dir / f"{name}.new")
            os.replace(model_dir / f"{name}.new", model_dir / name)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: metric(port, 'edge_infer_model_reloads_total{outcome="ok"}') == 1, 60, "reloaded")
        _results(tmp_path, _drop(tmp_path, 2, "reload"))
        assert http_status(port, "/healthz") == 200
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert "model reload (SIGHUP) failed unexpectedly, the current model keeps serving" in out
    assert "model reloaded (SIGHUP)" in out


# -- one shutdown deadline ------------------------------------------------------------------------------------------
def test_shutdown_with_a_stage_that_will_not_stop_exits_non_zero_within_the_deadline(tmp_path, notify_socket):
    # drain 1 s + the 5 s margin: the wedged reloader is abandoned, named, and the exit status says so.
    with _daemon(tmp_path, notify_socket, "hang_stage=reloader", shutdown={"drain_timeout_s": 1}) as (proc, _, _):
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert "abandoning stage(s) that did not stop within the shutdown deadline: model-reload" in out


def test_a_second_sigterm_cuts_the_joins_short(tmp_path, notify_socket):
    # A 300 s drain: only the second signal can end this shutdown within the 30 s the test waits.
    with _daemon(tmp_path, notify_socket, "hang_stage=reloader", shutdown={"drain_timeout_s": 300}) as (proc, _, sock):
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "STOPPING=1" in _drain(sock), 10, "STOPPING=1")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert "model-reload" in out
