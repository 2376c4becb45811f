"""The model store on disk: versions added after their self-test, ``current`` and ``previous``
swapped by rename, a version that fails refused with ``current`` unchanged. Real models (the
embedded one, copied), real onnxruntime sessions."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from edge_infer.classifier.manifest import default_model_path
from edge_infer.classifier.selftest import SAMPLES_DIR
from edge_infer.tools.model_store import CURRENT, PREVIOUS, ModelStore
from edge_infer.cli import main
from edge_infer.errors import ModelError


def _stock(folder: Path) -> Path:
    """The embedded model copied: it passes the self-test on the embedded photos."""
    folder.mkdir(parents=True)
    for name in ("model.onnx", "model.json"):
        shutil.copy(default_model_path().parent / name, folder / name)
    return folder


def _mislabelled(folder: Path) -> Path:
    """The embedded model with self-test photos of its own, every one labelled as the next class."""
    _stock(folder)
    shutil.copytree(SAMPLES_DIR, folder / "selftest")
    expected = json.loads((folder / "selftest" / "expected.json").read_text())
    expected["top1"] = {k: (v + 1) % 1000 for k, v in expected["top1"].items()}
    (folder / "selftest" / "expected.json").write_text(json.dumps(expected))
    manifest = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**manifest, "selftest": "selftest"}))
    return folder


def test_add_keeps_numbered_versions_with_their_record_and_list_shows_them(tmp_path, capsys):
    store = ModelStore(tmp_path / "store")
    src = _stock(tmp_path / "trained")
    manifest = json.loads((src / "model.json").read_text())
    training = {"classes": ["a", "b"], "accuracy": {"fp32": 0.9, "int8": 0.875},
                "per_class_recall": {"int8": {"a": 1.0}}, "confusion": {"int8": [[1, 0], [0, 1]]},
                "seconds": 12.5, "data_sha256": "ab12"}
    (src / "model.json").write_text(json.dumps({**manifest, "training": training}))
    first = store.add(src)
    assert first["version"] == "v1" and first["model"]["name"] == "mobilenet_v2"
    assert "8 of 8 self-test photos" in first["selftest"]
    assert first["training"] == training
    kept = json.loads((tmp_path / "store" / "v1" / "version.json").read_text())
    assert kept["training"] == training
    assert store.add(src)["version"] == "v2"
    assert store.add(src, name="stock")["version"] == "stock"
    assert [r["version"] for r in store.versions()] == ["v1", "v2", "stock"]
    # The stored manifest names its version: the daemon reports it as it loads the model.
    assert json.loads((tmp_path / "store" / "v2" / "model.json").read_text())["version"] == "v2"
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]
    with pytest.raises(ModelError, match="exists already"):
        store.add(src, name="v1")
    with pytest.raises(ModelError, match="version name 'current'"):
        store.add(src, name="current")

    assert main(["models", "list", "--store", str(tmp_path / "store")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["version", "created", "model", "classes", "int8", "top-1", "sha256"]
    assert table[1].split()[0] == "v1" and "87.5%" in table[1]
    assert main(["models", "list", "--store", str(tmp_path / "store"), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["version"], r["serving"]) for r in records] == [("v1", False), ("v2", False),
                                                              ("stock", False)]


def test_deploy_moves_current_and_keeps_the_previous_and_rollback_goes_back(tmp_path, capsys):
    root = tmp_path / "store"
    store = ModelStore(root)
    src = _stock(tmp_path / "m")
    store.add(src)
    store.add(src)
    with pytest.raises(ModelError, match="no previous version"):
        store.rollback()
    assert store.deploy("v1")[0] is None
    assert os.readlink(root / CURRENT) == "v1" and not os.path.lexists(root / PREVIOUS)
    assert store.deploy("v2")[0] == "v1"
    assert (os.readlink(root / CURRENT), os.readlink(root / PREVIOUS)) == ("v2", "v1")
    assert main(["models", "rollback", "--store", str(root)]) == 0
    assert capsys.readouterr().out.startswith(f"v1 serves in {root} (was v2)")
    assert (os.readlink(root / CURRENT), os.readlink(root / PREVIOUS)) == ("v1", "v2")
    assert (root / CURRENT / "model.json").is_file()
    assert main(["models", "deploy", "v9", "--store", str(root)]) == 1
    assert "no version 'v9'" in capsys.readouterr().err
    assert os.readlink(root / CURRENT) == "v1"


def test_a_version_that_fails_its_self_test_is_refused_and_current_is_unchanged(tmp_path, capsys):
    root = tmp_path / "store"
    store = ModelStore(root)
    bad = _mislabelled(tmp_path / "bad")
    assert main(["models", "add", str(bad), "--store", str(root)]) == 1
    assert "refused: it misclassifies 8 of 8 self-test photos" in capsys.readouterr().err
    assert not root.exists() or not any(root.iterdir())  # nothing kept, no staging left

    # A stored version that goes bad (its photos relabelled) is refused at deploy.
    store.add(_stock(tmp_path / "good"))
    store.add(_stock(tmp_path / "later"))
    store.deploy("v1")
    shutil.copytree(bad / "selftest", root / "v2" / "selftest")
    manifest = json.loads((root / "v2" / "model.json").read_text())
    (root / "v2" / "model.json").write_text(json.dumps({**manifest, "selftest": "selftest"}))
    with pytest.raises(ModelError, match="version 'v2' refused, v1 serves on: it misclassifies 8"):
        store.deploy("v2")
    assert os.readlink(root / CURRENT) == "v1" and not os.path.lexists(root / PREVIOUS)


def test_current_is_never_missing_while_it_is_swapped(tmp_path):
    """A reader (the daemon's watch, a load) resolves ``current`` at any moment: the swap is one
    rename, so it finds the old version or the new one, never no model."""
    root = tmp_path / "store"
    store = ModelStore(root)
    store.add(_stock(tmp_path / "m"))
    store.add(_stock(tmp_path / "n"))
    store.deploy("v1")
    misses, done = [], threading.Event()

    def read() -> None:
        while not done.is_set():
            if not (root / CURRENT / "model.onnx").is_file():
                misses.append(1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(2000):
            store._point(CURRENT, ("v1", "v2")[i % 2])
    finally:
        done.set()
        reader.join()
    assert misses == []


def test_a_second_command_changing_the_store_meanwhile_is_refused(tmp_path, capsys):
    """Two deploys at once would each put back the links the other found: the second is refused."""
    import fcntl

    root = tmp_path / "store"
    ModelStore(root).add(_stock(tmp_path / "m"))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a deploy waiting for its daemon holds it
        assert main(["models", "deploy", "v1", "--store", str(root)]) == 1
        assert "another edge-infer models command is changing" in capsys.readouterr().err
        assert not os.path.lexists(root / CURRENT)
    finally:
        os.close(fd)
    assert main(["models", "deploy", "v1", "--store", str(root)]) == 0
