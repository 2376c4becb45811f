"""The real export: shared fp32 weights -> int8, calibrated and verified on the shared photos (CI runs it)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_infer.cli import main
from tests.support.paths import LABEL_NAMES, SAMPLES, WEIGHTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(shared, torch_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    rc = main(["export", "--weights", str(WEIGHTS), "--images", str(SAMPLES), "--labels-csv",
               str(SAMPLES / "labels.csv"), "--class-names", str(LABEL_NAMES), "--out", str(out)])
    assert rc == 0
    return out, json.loads((out / "model.json").read_text())


def test_int8_keeps_the_accuracy_of_fp32(exported):
    _, manifest = exported
    v = manifest["verification"]
    assert v["images"] == 150 and v["labelled"] == 150 and v["passed"]
    assert v["int8_top1"] >= v["fp32_top1"] - 0.010, v  # the acceptance bar: within 1.0 point
    assert v["agreement_top1"] >= 0.93, v


def test_fp32_onnx_sees_pixels_exactly_as_torchvision_does(exported):
    # shared/weights/README.md: top-1 on the 200 photos is 85.5% with torchvision's Resize(256) +
    # CenterCrop(224). Our one preprocessing implementation must reproduce that figure exactly.
    from edge_infer.classifier.session import make_ort_session
    from edge_infer.decoding.preprocess import PreprocessSpec
    from edge_infer.export.images import list_images, load_images, read_labels_csv

    out, _ = exported
    images = load_images(list_images(SAMPLES), PreprocessSpec(), "all")
    truth = read_labels_csv(SAMPLES / "labels.csv")
    logits = make_ort_session(out / "fp32" / "model.onnx").run(None, {"input": images.tensors})[0]
    y = np.array([truth[n] for n in images.names])
    assert len(y) == 200 and abs(float((logits.argmax(1) == y).mean()) - 0.855) < 1e-9



def test_export_reproduces_the_embedded_model_bit_for_bit(exported):
    # `make model` must give back exactly what ships, when run with the tool versions that made it.
    from edge_infer.classifier.manifest import default_model_path, load_manifest, sha256_file

    out, manifest = exported
    shipped = load_manifest(default_model_path()).raw
    keys = ("torch", "onnx", "onnxruntime", "numpy", "machine")
    if any(shipped["tools"][k] != manifest["tools"][k] for k in keys):
        pytest.skip(f"tool versions differ from the embedded model's: {[shipped['tools'][k] for k in keys]}")
    assert sha256_file(out / "model.onnx") == shipped["sha256"]
