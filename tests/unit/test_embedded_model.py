"""The model that ships inside the package: intact, self-described, and right on real photos."""
import csv
import json

import numpy as np
import pytest

from edge_infer.classifier.manifest import default_model_path, load_manifest, sha256_file
from edge_infer.classifier.session import ModelSession
from tests.support.paths import SAMPLES


def test_packaged_model_matches_its_manifest():
    path = default_model_path()
    m = load_manifest(path)
    assert sha256_file(path) == m.sha256
    assert m.precision == "int8" and m.name == "mobilenet_v2" and len(m.labels) == 1000
    raw = m.raw
    for key in ("architecture", "opset", "input", "output", "preprocess", "source_weights", "quantization",
                "verification", "tools"):
        assert key in raw, key
    assert raw["verification"]["passed"] is True
    assert raw["input"]["shape"][1:] == [3, 224, 224] and raw["input"]["dtype"] == "float32"
    assert raw["labels"][285] == "Egyptian cat"


def test_session_loads_warms_up_and_runs_a_batch():
    s = ModelSession.load()
    s.warm_up(2)
    out = s.run(np.zeros((3, 3, 224, 224), np.float32))
    assert out.shape == (3, 1000) and np.isfinite(out).all()


def test_classifies_real_photos_correctly(shared):
    from edge_infer.decoding.preprocess import prepare

    s = ModelSession.load()
    rows = list(csv.DictReader(open(SAMPLES / "labels.csv")))[::5]  # 40 photos, a spread of classes
    batch = np.stack([prepare(SAMPLES / r["file"], s.manifest.preprocess).tensor for r in rows])
    pred = s.run(batch).argmax(1)
    hits = sum(int(p) == int(r["class_index"]) for p, r in zip(pred, rows))
    assert hits >= 32, f"{hits}/40 correct"  # fp32 gets 85.5% on all 200


def test_a_tampered_model_is_refused(tmp_path):
    from edge_infer.errors import ModelError

    model = tmp_path / "model.onnx"
    model.write_bytes(default_model_path().read_bytes()[:-10] + b"0123456789")
    (tmp_path / "model.json").write_text(json.dumps(load_manifest(default_model_path()).raw))
    with pytest.raises(ModelError, match="sha256"):
        ModelSession.load(model)


def test_missing_manifest_is_a_clear_error(tmp_path):
    from edge_infer.errors import ModelError

    (tmp_path / "model.onnx").write_bytes(default_model_path().read_bytes())
    with pytest.raises(ModelError, match="no manifest"):
        ModelSession.load(tmp_path / "model.onnx")


def test_a_missing_model_file_is_named(tmp_path):
    from edge_infer.errors import ModelError

    with pytest.raises(ModelError, match="nope.onnx does not exist"):
        ModelSession.load(tmp_path / "nope.onnx")
