"""Model replaced while running: a shadow session, self-tested on the embedded photos, swapped in only if it
passes; otherwise the old model keeps serving and the failure is logged and counted.

Replacement models are made from the embedded one with ``onnx``: an equivalent copy (new sha256, same
predictions), one that runs but always answers class 0, and files that do not load at all.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from edge_infer.classifier.manifest import default_model_path, sha256_file
from edge_infer.classifier.selftest import self_test
from edge_infer.classifier.session import ModelSession
from edge_infer.errors import ModelError
from tests.support.daemon import RunningApp, daemon, free_port, http_status, install_model
from tests.support.daemon import read_result, scrape, wait_for, write_config
from tests.support.images import write_images

onnx = pytest.importorskip("onnx", reason="making replacement models needs the onnx package (the export extra)")


def make_model(folder: Path, kind: str) -> Path:
    """A copy of the embedded model in ``folder``: ``same`` (equivalent, new sha256), ``class0`` (always
    predicts class 0), ``corrupt`` (not an ONNX file), ``mean05`` (a manifest asking other normalisation)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = default_model_path()
    manifest = json.loads(src.with_name("model.json").read_text())
    model = onnx.load(str(src))
    if kind in ("same", "mean05"):
        model.doc_string = f"variant {kind}"  # changes the bytes, not the function
    elif kind == "class0":
        # logits -> logits * 0 + onehot(0): runs fine, answers nonsense.
        out = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = [f"{out}_raw" if o == out else o for o in node.output]
        n = len(manifest["labels"])
        model.graph.initializer.extend([
            onnx.helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0.0]),
            onnx.helper.make_tensor("onehot", onnx.TensorProto.FLOAT, [n], [10.0] + [0.0] * (n - 1))])
        model.graph.node.extend([onnx.helper.make_node("Mul", [f"{out}_raw", "zero"], ["zeroed"]),
                                 onnx.helper.make_node("Add", ["zeroed", "onehot"], [out])])
    path = folder / "model.onnx"
    tmp = folder / "model.onnx.new"
    if kind == "corrupt":
        tmp.write_bytes(b"this is not an onnx model" * 100)
    else:
        onnx.save(model, str(tmp))
    manifest["sha256"] = sha256_file(tmp)
    if kind == "mean05":
        manifest["preprocess"]["mean"] = [0.5, 0.5, 0.5]
    (folder / "model.json.new").write_text(json.dumps(manifest))
    os.replace(folder / "model.json.new", folder / "model.json")
    os.replace(tmp, path)
    return path


def test_self_test_passes_the_shipped_model_and_an_equivalent_copy(tmp_path):
    serving = ModelSession.load()
    assert "8 of 8" in self_test(ModelSession.load(make_model(tmp_path / "same", "same")), serving)


def test_self_test_refuses_a_model_that_runs_but_answers_nonsense(tmp_path):
    with pytest.raises(ModelError, match="misclassifies 8 of 8 self-test photos"):
        self_test(ModelSession.load(make_model(tmp_path / "bad", "class0")), ModelSession.load())


def test_self_test_refuses_other_preprocessing_which_needs_a_restart(tmp_path):
    serving = ModelSession.load()
    candidate = ModelSession.load(make_model(tmp_path / "c", "mean05"))
    with pytest.raises(ModelError, match="restart the daemon"):
        self_test(candidate, serving)


def _drop_and_read_model(root: Path, name: str) -> str:
    """Rename one photo into the inbox as ``name``; the sha256 of the model its result names."""
    staged = write_images(root / "staging" / name, 1)[0]
    os.replace(staged, root / "inbox" / name)
    return wait_for(lambda: (root / "results" / "drops" / f"{name}.json").exists() and read_result(root, name),
                    30, f"result for {name}")["model"]["sha256"]



def test_a_changed_model_file_is_swapped_in_only_when_its_self_test_passes(tmp_path):
    model_dir = tmp_path / "model"
    first_sha = sha256_file(make_model(model_dir, "same"))
    (tmp_path / "inbox").mkdir()
    cfg = write_config(tmp_path, model={"path": str(model_dir / "model.onnx")},
                       pipeline={"workers": 2, "inference_threads": 2})
    with RunningApp(cfg) as run:
        reloads = lambda outcome: run.sample("edge_infer_model_reloads_total", outcome=outcome)  # noqa: E731
        info = lambda sha: run.app.registry.get_sample_value(  # noqa: E731
            "edge_infer_model_info",
            {"name": "mobilenet_v2", "sha256": sha, "precision": "int8", "version": ""}) or 0
        assert _drop_and_read_model(tmp_path, "a.jpg") == first_sha

        # Loads and runs, but answers class 0 for everything: refused; the old model keeps serving.
        make_model(model_dir, "class0")
        wait_for(lambda: reloads("failed") == 1, 30, "the refused reload to be counted")
        assert _drop_and_read_model(tmp_path, "b.jpg") == first_sha
        assert info(first_sha) == 1 and reloads("ok") == 0

        # A good model (the shipped file, a different sha256): swapped in between two batches.
        new_sha = install_model(model_dir, default_model_path().parent)
        assert new_sha != first_sha
        wait_for(lambda: reloads("ok") == 1, 30, "the good model to be swapped in")
        # Every inference thread swaps: photos one after another are taken by whichever thread waits first,
        # so eight of them reach both (a thread that kept the old model would show in most runs).
        assert len(run.app.stages.inference) == 2
        assert [_drop_and_read_model(tmp_path, f"c{i}.jpg") for i in range(8)] == [new_sha] * 8
        assert info(new_sha) == 1 and info(first_sha) == 0  # one model_info series, the serving one
        assert reloads("failed") == 1


def test_sighup_reloads_at_once_and_a_model_that_does_not_load_leaves_the_old_one_serving(tmp_path):
    model_dir = tmp_path / "model"
    first_sha = sha256_file(make_model(model_dir, "same"))
    (tmp_path / "inbox").mkdir()
    port = free_port()
    cfg = write_config(tmp_path, model={"path": str(model_dir / "model.onnx")}, metrics={"port": port})
    with daemon(cfg) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        assert _drop_and_read_model(tmp_path, "a.jpg") == first_sha

        make_model(model_dir, "corrupt")
        proc.send_signal(signal.SIGHUP)  # at once: no waiting for the file watcher's settle time
        wait_for(lambda: 'edge_infer_model_reloads_total{outcome="failed"} 1.0' in scrape(port), 30,
                 "the refused reload to be counted")
        assert _drop_and_read_model(tmp_path, "b.jpg") == first_sha
        assert http_status(port, "/readyz") == 200 and http_status(port, "/healthz") == 200

        new_sha = install_model(model_dir, default_model_path().parent)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'edge_infer_model_reloads_total{outcome="ok"} 1.0' in scrape(port), 30,
                 "the good model to be swapped in")
        assert _drop_and_read_model(tmp_path, "c.jpg") == new_sha
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "model reload (SIGHUP) refused, the current model keeps serving: cannot load model" in out
    assert "model reloaded (SIGHUP): mobilenet_v2" in out and "top-1 right on 8 of 8" in out
