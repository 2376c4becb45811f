"""Shared fixtures. Tests that need ../shared (real weights and photos) skip with a reason where it is absent."""
from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGE_INFER_SHARED", ROOT.parent / "shared"))
SAMPLES = SHARED / "images" / "imagenet-samples"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet1k.pth"
LABEL_NAMES = SHARED / "labels" / "imagenet1k_labels.txt"
PEER = SHARED / "models" / "onnx-zoo-mobilenetv2-12-int8.onnx"


def skip_unless_ci(reason: str) -> None:
    """Skip with ``reason`` on a developer's machine; fail in CI, which must provide everything."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide this: {reason}")
    pytest.skip(reason)


def _shared_reason() -> str:
    return (f"needs the shared data at {SHARED} (real weights and photos; present in CI, absent in a fresh "
            "clone; set EDGE_INFER_SHARED to point elsewhere)")


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SAMPLES / "labels.csv").is_file():
        skip_unless_ci(_shared_reason())
    return SHARED


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


def write_images(folder: Path, n: int, size: tuple[int, int] = (320, 240), seed: int = 0,
                 fmt: str = "jpg") -> list[Path]:
    """``n`` real image files (JPEG, or PNG: slower to decode, never draft-decoded) with smooth random content."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small, "RGB").resize(size, Image.Resampling.BICUBIC)
        p = folder / f"img_{i:03d}.{fmt}"
        img.save(p, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(p)
    return paths


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
