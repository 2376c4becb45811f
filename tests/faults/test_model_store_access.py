"""The model store with the daemon as the service runs it (uid 65534) and ``edge-infer models``
run by root: a version root adds must be one the daemon can read, and a version the daemon refuses
is undone by the deploy that asked for it."""
from __future__ import annotations

import os
from pathlib import Path

from edge_infer.classifier.manifest import default_model_path
from tests.support.cli import run_cli
from tests.support.daemon import free_port, http_status, scrape, wait_for, write_config
from tests.support.unprivileged import daemon_as, stop


def _store_config(base: Path) -> tuple[Path, Path, int]:
    store, port = base / "models", free_port()
    cfg = write_config(base, model={"path": str(store / "current" / "model.onnx"),
                                    "store": str(store)}, metrics={"port": port})
    return cfg, store, port


def _add(cfg: Path, umask: int = 0o022) -> None:
    old = os.umask(umask)  # the CLI's subprocess inherits it, as from root's login shell
    try:
        added = run_cli("models", "add", str(default_model_path().parent), "-c", str(cfg))
    finally:
        os.umask(old)
    assert added.returncode == 0, added.stderr


def test_a_version_root_adds_under_a_strict_umask_is_one_the_daemon_can_serve(base):
    cfg, store, port = _store_config(base)
    _add(cfg)
    assert run_cli("models", "deploy", "v1", "-c", str(cfg)).returncode == 0
    _add(cfg, umask=0o077)
    with daemon_as(cfg, base / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        deployed = run_cli("models", "deploy", "v2", "-c", str(cfg))
        assert deployed.returncode == 0, deployed.stderr + (base / "daemon.log").read_text()
        assert 'version="v2"' in scrape(port)
        stop(proc)


def test_a_version_the_daemon_refuses_is_undone_and_the_old_one_serves_on(base):
    cfg, store, port = _store_config(base)
    _add(cfg)
    _add(cfg)
    assert run_cli("models", "deploy", "v1", "-c", str(cfg)).returncode == 0
    (store / "v2" / "model.onnx").chmod(0o600)  # root (the CLI) reads it, the daemon cannot
    with daemon_as(cfg, base / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        refused = run_cli("models", "deploy", "v2", "-c", str(cfg))
        assert refused.returncode == 1, refused.stdout
        assert "refused v2 (its log says why); undone, v1 serves on" in refused.stderr
        assert os.readlink(store / "current") == "v1" and not (store / "previous").exists()
        text = scrape(port)
        assert 'version="v1"' in text
        assert 'edge_infer_model_reloads_total{outcome="failed"} 1.0' in text
        stop(proc)
    log = (base / "daemon.log").read_text()
    assert "model reload (model file changed)" in log and "Permission denied" in log
