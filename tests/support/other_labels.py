"""A small model with labels other than ImageNet's, made in a second from the embedded one, for hot-swap tests.

The embedded int8 MobileNetV2 with a ``Gather`` on its logits that keeps three ImageNet classes: a real
3-class classifier (its rows are those classes' rows), which knows the three embedded self-test photos of
those classes. ``with_samples`` writes what ``edge-infer train`` writes for the reload self-test: a
``selftest/`` folder with those photos and ``expected.json``, and ``"selftest": "selftest"`` in the manifest.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from edge_infer.classifier.manifest import default_model_path, sha256_file
from edge_infer.classifier.selftest import SAMPLES_DIR

# (label, ImageNet-1k index, the embedded photo that shows it)
CLASSES = (("golfcart", 575, "golfcart.jpg"), ("penguin", 145, "king_penguin.jpg"), ("zebra", 340, "zebra.jpg"))
LABELS = tuple(c[0] for c in CLASSES)


def photo(label: str) -> Path:
    """The embedded self-test photo of one of ``LABELS``."""
    return SAMPLES_DIR / next(c[2] for c in CLASSES if c[0] == label)


def make_three_class_model(folder: Path, with_samples: bool = True, name: str = "three_things") -> Path:
    """``folder/model.onnx`` + ``model.json`` (+ ``selftest/``), each written aside and renamed into place."""
    import onnx  # the export extra

    folder.mkdir(parents=True, exist_ok=True)
    src = default_model_path()
    manifest = json.loads(src.with_name("model.json").read_text())
    model = onnx.load(str(src))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{out}_imagenet" if o == out else o for o in node.output]
    model.graph.initializer.append(onnx.helper.make_tensor("keep", onnx.TensorProto.INT64, [len(CLASSES)],
                                                           [c[1] for c in CLASSES]))
    model.graph.node.append(onnx.helper.make_node("Gather", [f"{out}_imagenet", "keep"], [out], axis=1))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = len(CLASSES)
    tmp = folder / "model.onnx.new"
    onnx.save(model, str(tmp))
    manifest.update(name=name, labels=list(LABELS), sha256=sha256_file(tmp))
    manifest["output"]["shape"] = [manifest["output"]["shape"][0], len(CLASSES)]
    manifest.pop("selftest", None)
    if with_samples:
        samples = folder / "selftest"
        samples.mkdir(exist_ok=True)
        expected = {}
        for i, (label, _, file) in enumerate(CLASSES):
            shutil.copy(SAMPLES_DIR / file, samples / f"{label}__0.jpg")
            expected[f"{label}__0.jpg"] = i
        (samples / "expected.json").write_text(json.dumps({"top1": expected}))
        manifest["selftest"] = "selftest"
    (folder / "model.json.new").write_text(json.dumps(manifest))
    os.replace(folder / "model.json.new", folder / "model.json")
    os.replace(tmp, folder / "model.onnx")
    return folder / "model.onnx"
