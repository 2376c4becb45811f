"""Shared fixtures. Tests that need ../shared (real weights and photos) skip with a reason where it is absent."""
from __future__ import annotations

import gc
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.ci import skip_unless_ci
from tests.support.paths import SAMPLES, SHARED, WEIGHTS


def _shared_reason() -> str:
    return (f"needs the shared data at {SHARED} (real weights and photos; present in CI, absent in a fresh "
            "clone; set EDGE_INFER_SHARED to point elsewhere)")


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SAMPLES / "labels.csv").is_file():
        skip_unless_ci(_shared_reason())
    return SHARED


@pytest.fixture
def notify_socket(tmp_path):
    """A systemd NOTIFY_SOCKET to hand the daemon: (its path, the bound datagram socket)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    yield path, sock
    sock.close()


@pytest.fixture(autouse=True)
def _no_thread_leaks():
    """Fail any test that leaves a thread running (watchdog's own guard)."""
    before = {t.ident for t in threading.enumerate()}
    yield
    gc.collect()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"threads leaked: {[t.name for t in leaked]}")


@pytest.fixture(scope="session")
def torch_module():
    """torch (the `export` extra); skipped with a reason where it is not installed, required in CI."""
    try:
        import torch
    except ImportError:
        skip_unless_ci("needs torch: pip install -e '.[export,dev]'")
    return torch


@pytest.fixture(scope="session")
def pyav():
    """PyAV (the `camera` extra)."""
    try:
        import av
    except ImportError:
        skip_unless_ci("needs PyAV: pip install -e '.[camera,dev]'")
    return av


@pytest.fixture(scope="session")
def mkdocs_module():
    """MkDocs with the Material theme (the `docs` extra)."""
    try:
        import material
        import mkdocs
    except ImportError:
        skip_unless_ci("needs mkdocs and mkdocs-material: pip install -e '.[docs]' (make docs)")
    return mkdocs, material


@pytest.fixture(scope="session")
def rtsp() -> None:
    """GStreamer's RTSP server under Debian's python3 (.ci/install-system-deps installs it)."""
    from tests.support.rtsp import rtsp_available

    reason = rtsp_available()
    if reason:
        skip_unless_ci(reason)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate (tests.support.tls.Pki) for the module's tests."""
    from tests.support.tls import make_pki

    made = make_pki(tmp_path_factory.mktemp("pki"))
    if made is None:
        skip_unless_ci("needs the openssl CLI to make a test CA")
    return made


@pytest.fixture(scope="session")
def coarse7_data(shared, tmp_path_factory) -> Path:
    """The 7-group dataset (a folder per group of the shared photos), built once per session."""
    from tests.support.coarse7 import build_coarse7

    data = tmp_path_factory.mktemp("coarse7") / "data"
    build_coarse7(shared, data)
    return data


@pytest.fixture(scope="session")
def coarse7_model(coarse7_data, torch_module, tmp_path_factory) -> Path:
    """``edge-infer train`` on the 7-group set from the shared weights, once per session: the model folder
    OUT (model.onnx + model.json int8, fp32/, selftest/, confusion.png). Takes a few minutes: slow tests only."""
    from edge_infer.cli import main

    out = tmp_path_factory.mktemp("coarse7-model")
    code = main(["train", "--data", str(coarse7_data), "--out", str(out), "--weights", str(WEIGHTS)])
    assert code == 0, f"edge-infer train exited {code}"
    return out


@pytest.fixture(scope="session")
def coarse7_runtime_model(coarse7_data, tmp_path_factory) -> Path:
    """``edge-infer train`` on the 7-group set with the runtime alone (the default path), once per
    session: the model folder OUT (model.onnx + model.json, selftest/, confusion.png). Seconds."""
    from edge_infer.cli import main

    out = tmp_path_factory.mktemp("coarse7-runtime-model")
    code = main(["train", "--data", str(coarse7_data), "--out", str(out)])
    assert code == 0, f"edge-infer train exited {code}"
    return out
