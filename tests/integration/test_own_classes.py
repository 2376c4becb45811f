"""A model of other classes deployed by the hot swap, counted and sorted by class: real daemon processes,
real SIGHUP, real scrapes of /metrics.

The model with other labels is the embedded one keeping three ImageNet classes (tests/support/other_labels.py),
with its own self-test photos beside it as ``edge-infer train`` writes them.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_infer.classifier.manifest import default_model_path
from edge_infer.classifier.postprocess import top_k
from edge_infer.classifier.selftest import SAMPLES_DIR, self_test
from edge_infer.classifier.session import ModelSession
from edge_infer.decoding.preprocess import prepare
from edge_infer.errors import ModelError
from tests.support.daemon import daemon, free_port, http_status, install_model, read_result
from tests.support.daemon import scrape, wait_for, write_config
from tests.support.paths import ROOT

pytest.importorskip("onnx", reason="making the 3-class model needs the onnx package (the export extra)")
from tests.support.other_labels import LABELS, make_three_class_model, photo  # noqa: E402


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    """The 3-class model with its own self-test photos."""
    return make_three_class_model(tmp_path_factory.mktemp("three") / "model").parent


@pytest.fixture(scope="module")
def three_bare(tmp_path_factory) -> Path:
    """The same without self-test photos."""
    return make_three_class_model(tmp_path_factory.mktemp("bare") / "model", with_samples=False).parent


def _top1(session: ModelSession, path: Path) -> dict:
    return top_k(session.run(prepare(path, session.manifest.preprocess).tensor[None]), 5, session.manifest.labels)[0][0]


def test_a_model_with_other_labels_passes_on_its_own_photos_and_is_refused_without_them(three, three_bare, tmp_path):
    serving = ModelSession.load()
    assert "right on 3 of 3 self-test photos (its own in" in self_test(ModelSession.load(three), serving)
    with pytest.raises(ModelError, match="3 labels of its own and no self-test photos: .*'selftest' key"):
        self_test(ModelSession.load(three_bare), serving)
    # Its photos labelled wrong (each as the next class): 3 of 3 missed, over the 1 allowed.
    bad = tmp_path / "bad"
    shutil.copytree(three, bad)
    expected = json.loads((bad / "selftest" / "expected.json").read_text())
    expected["top1"] = {k: (v + 1) % 3 for k, v in expected["top1"].items()}
    (bad / "selftest" / "expected.json").write_text(json.dumps(expected))
    with pytest.raises(ModelError, match=r"misclassifies 3 of 3 self-test photos \(its own .*at most 1 allowed"):
        self_test(ModelSession.load(bad), serving)
    # A manifest whose "selftest" leads out of the model's folder is refused, never read.
    manifest = json.loads((bad / "model.json").read_text())
    for escape in ("../three", "/etc", ""):
        (bad / "model.json").write_text(json.dumps({**manifest, "selftest": escape}))
        with pytest.raises(ModelError, match="selftest"):
            self_test(ModelSession.load(bad), serving)


def test_classify_runs_a_model_with_other_labels(three):
    out = subprocess.run([sys.executable, "-m", "edge_infer", "classify", "--model", str(three / "model.onnx"),
                          "--top-k", "5", str(photo("zebra")), str(photo("penguin"))],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["predictions"][0]["label"] for r in rows] == ["zebra", "penguin"]
    assert all(len(r["predictions"]) == 3 for r in rows)  # top-k 5 of 3 classes: all three, once each
    assert {r["model"]["name"] for r in rows} == {"three_things"}




def _drop(root: Path, src: Path, name: str) -> None:
    (root / "staging").mkdir(exist_ok=True)
    shutil.copy(src, root / "staging" / name)
    os.replace(root / "staging" / name, root / "inbox" / name)


def test_a_daemon_swaps_in_a_model_of_its_own_classes_counts_and_sorts_by_them(three, three_bare, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    install_model(model_dir, default_model_path().parent)  # the stock model, at a path that can be replaced
    (tmp_path / "inbox").mkdir()
    port = free_port()
    sources = [{"name": "drops", "type": "folder", "path": "inbox", "after": "move", "done_dir": "var/done/{label}",
                "failed_dir": "var/failed", "min_score": 0.9}]
    cfg = write_config(tmp_path, sources, model={"path": str(model_dir / "model.onnx")}, metrics={"port": port})
    three_session = ModelSession.load(three)
    with daemon(cfg) as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        # The stock model: 1000 classes, over metrics.max_label_classes (100): no per-class series.
        _drop(tmp_path, photo("zebra"), "first.jpg")
        wait_for(lambda: (tmp_path / "var" / "done" / "zebra" / "first.jpg").exists(), 30, "first.jpg in done/zebra")
        assert read_result(tmp_path, "first.jpg")["predictions"][0]["label"] == "zebra"  # ImageNet's own name
        assert "edge_infer_predictions_total{" not in scrape(port)

        # Other labels and no photos of its own: refused, the stock model serves on.
        install_model(model_dir, three_bare)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'edge_infer_model_reloads_total{outcome="failed"} 1.0' in scrape(port), 30, "refusal")
        assert 'name="mobilenet_v2"' in scrape(port)

        # With its own self-test photos: swapped in.
        install_model(model_dir, three)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'edge_infer_model_reloads_total{outcome="ok"} 1.0' in scrape(port), 30, "swap")
        text = scrape(port)
        assert 'edge_infer_model_info{name="three_things"' in text and 'name="mobilenet_v2"' not in text

        # New photos get the new labels and land in done/<label>/; a score under min_score in done/unsure/.
        drops = {"cart.jpg": photo("golfcart"), "bird.jpg": photo("penguin"), "stripes.jpg": photo("zebra"),
                 "boat.jpg": SAMPLES_DIR / "lifeboat.jpg", "light.jpg": SAMPLES_DIR / "traffic_light.jpg"}
        want = {}
        for name, src in drops.items():
            top = _top1(three_session, src)
            want[name] = (top["label"], top["label"] if top["score"] >= 0.9 else "unsure")
            _drop(tmp_path, src, name)
        assert {w[1] for w in want.values()} == {*LABELS, "unsure"}  # the photos cover every folder
        for name, (label, folder) in want.items():
            wait_for(lambda: (tmp_path / "var" / "done" / folder / name).exists(), 30, f"{name} in done/{folder}")
            result = read_result(tmp_path, name)
            assert result["predictions"][0]["label"] == label and result["model"]["name"] == "three_things"
            assert len(result["predictions"]) == 3  # top_k 5, clamped to the model's 3 classes

        # The same bytes again under the same name: a duplicate, found by its earlier result and filed with it.
        _drop(tmp_path, photo("zebra"), "stripes.jpg")
        wait_for(lambda: 'edge_infer_images_total{outcome="duplicate",source="drops"} 1.0' in scrape(port), 30,
                 "the duplicate")
        wait_for(lambda: not (tmp_path / "inbox" / "stripes.jpg").exists(), 30, "the duplicate acknowledged")
        assert sorted(os.listdir(tmp_path / "var" / "done" / "zebra")) == ["first.jpg", "stripes.jpg"]

        text = scrape(port)
        for label in LABELS:
            n = sum(1 for w in want.values() if w[0] == label)
            assert f'edge_infer_predictions_total{{label="{label}",source="drops"}} {float(n)}' in text, label
        assert text.count("edge_infer_predictions_total{") == len(LABELS)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "edge_infer_predictions_total is not exported for this model: it has 1000 classes" in out
    assert "3 labels of its own and no self-test photos" in out
    assert "model reloaded (SIGHUP): three_things" in out and "top-1 right on 3 of 3 self-test photos (its own" in out


@pytest.mark.parametrize("source, key, message", [
    ({"after": "keep"}, "sources[0].done_dir", "needs after: move"),
    ({"done_dir": "var/done/{class}"}, "sources[0].done_dir", "may only use the placeholder(s) {label}"),
    ({"min_score": 1.5}, "sources[0].min_score", "must be <= 1"),
    ({"done_dir": "var/done", "min_score": 0.5}, "sources[0].min_score", "only sorts inputs into unsure"),
])
def test_config_errors_name_the_key(tmp_path, source, key, message):
    sources = [{"name": "drops", "type": "folder", "path": "inbox", "after": "move", "done_dir": "var/done/{label}",
                "failed_dir": "var/failed", **source}]
    cfg = write_config(tmp_path, sources)
    out = subprocess.run([sys.executable, "-m", "edge_infer", "run", "-c", str(cfg)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 78
    assert f"{key}: " in out.stderr + out.stdout and message in out.stderr + out.stdout
