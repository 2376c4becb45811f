"""``edge-infer models`` against a running daemon: a version added, deployed (the daemon hot-swaps
it, its /metrics and ``status`` name it), rolled back (the old one serves again). Real daemon
process, real CLI subprocesses, real scrapes."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from edge_infer.classifier.manifest import default_model_path
from tests.support.cli import run_cli
from tests.support.daemon import daemon, free_port, http_status, scrape, wait_for, write_config

pytest.importorskip("onnx", reason="making the 3-class model needs the onnx package (export extra)")
from tests.support.other_labels import make_three_class_model  # noqa: E402


def _serving(port: int) -> str:
    text = scrape(port)
    return next((line for line in text.splitlines()
                 if line.startswith("edge_infer_model_info{")), "")


def _served_from_store(tmp_path):
    """A config whose model is the store's ``current``: (the store, the metrics port, the config)."""
    store = tmp_path / "var" / "models"
    (tmp_path / "inbox").mkdir()
    port = free_port()
    cfg = write_config(tmp_path, model={"path": str(store / "current" / "model.onnx"),
                                        "store": str(store)}, metrics={"port": port})
    return store, port, cfg


def test_deploy_and_rollback_swap_the_running_daemons_model_and_its_metrics_say_which(tmp_path):
    three = make_three_class_model(tmp_path / "three" / "model").parent
    store, port, cfg = _served_from_store(tmp_path)
    c = ("-c", str(cfg))
    # The stock model, first in the store, deployed before the daemon starts.
    added = run_cli("models", "add", str(default_model_path().parent), *c)
    assert added.returncode == 0 and added.stdout.startswith("added v1 ("), added.stderr
    first = run_cli("models", "deploy", "v1", *c)
    assert first.returncode == 0, first.stderr
    assert (f"no daemon answers at http://127.0.0.1:{port}: it serves v1 once it starts"
            in first.stdout)
    assert run_cli("models", "add", str(three), "--name", "three", *c).returncode == 0

    with daemon(cfg) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        assert 'name="mobilenet_v2"' in _serving(port) and 'version="v1"' in _serving(port)

        deployed = run_cli("models", "deploy", "three", *c)
        assert deployed.returncode == 0, deployed.stderr
        assert f"the daemon at http://127.0.0.1:{port} serves three" in deployed.stdout
        line = _serving(port)
        assert 'name="three_things"' in line and 'version="three"' in line, line
        status = run_cli("status", *c, "--interval", "0")
        assert "three_things int8 sha256 " in status.stdout and " version three" in status.stdout

        back = run_cli("models", "rollback", *c)
        assert back.returncode == 0, back.stderr
        assert back.stdout.startswith(f"v1 serves in {store} (was three)")
        assert f"the daemon at http://127.0.0.1:{port} serves v1" in back.stdout
        assert 'name="mobilenet_v2"' in _serving(port) and 'version="v1"' in _serving(port)
        assert 'edge_infer_model_reloads_total{outcome="ok"} 2.0' in scrape(port)
        listed = run_cli("models", "list", *c).stdout.splitlines()
        assert [row.split()[:2] for row in listed[1:3]] == [["*", "v1"], ["-", "three"]]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "model reloaded (model file changed): three_things" in out
    assert os.readlink(store / "current") == "v1"


def test_a_deploy_the_daemon_does_not_take_is_undone(tmp_path):
    """A daemon that serves from the store but does not swap (its reloader wedged, as a call that
    never returns would wedge it): the deploy waits --wait seconds, puts the links back, exits 1."""
    store, port, cfg = _served_from_store(tmp_path)
    c = ("-c", str(cfg))
    for _ in range(2):
        assert run_cli("models", "add", str(default_model_path().parent), *c).returncode == 0
    assert run_cli("models", "deploy", "v1", *c).returncode == 0
    with daemon(cfg, env_extra={"EDGE_INFER_FAULTS": "hang_stage=reloader"}):
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        late = run_cli("models", "deploy", "v2", "--wait", "3", *c)
        assert late.returncode == 1, late.stdout
        assert "did not serve v2 within 3 s; undone, v1 serves on" in late.stderr
        assert os.readlink(store / "current") == "v1" and not (store / "previous").exists()
        assert 'version="v1"' in _serving(port)


def test_a_config_whose_daemon_does_not_serve_from_the_store_is_named(tmp_path: Path):
    cfg = write_config(tmp_path, metrics={"port": free_port()})  # model.path: the embedded model
    c = ("-c", str(cfg))
    assert run_cli("models", "add", str(default_model_path().parent), *c).returncode == 0
    out = run_cli("models", "deploy", "v1", *c)
    assert out.returncode == 0 and "its daemon does not serve from this store" in out.stdout
    assert (tmp_path / "models" / "v1" / "version.json").is_file()  # models/ beside output.dir
