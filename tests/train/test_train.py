"""``edge-infer train`` end to end on a tiny generated dataset, and its errors for bad input (fast suite)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_infer.classifier.manifest import REQUIRED_KEYS
from edge_infer.cli import main
from edge_infer.train.split import stratified_split
from tests.support.colour_classes import COLOURS, write_class

CLASSES = ["blue", "green", "red"]


@pytest.fixture(scope="module")
def tiny(torch_module, tmp_path_factory):
    """A width-0.35 random-weight ImageNet-shaped network and a 3-class dataset (one broken file in red)."""
    from edge_infer.export.mobilenet import MobileNetV2

    torch_module.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny")
    torch_module.save(MobileNetV2(width_mult=0.35).state_dict(), d / "weights.pth")
    for k, name in enumerate(CLASSES):
        write_class(d / "data" / name, COLOURS[name], 5 + k, seed=k)
    (d / "data" / "red" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (d / "data" / "red" / "notes.txt").write_text("not an image, ignored")
    return d


def train_args(d, out, *extra, data=None):
    return ["train", "--data", str(data or d / "data"), "--out", str(out), "--weights", str(d / "weights.pth"),
            "--width-mult", "0.35", "--views", "2", "--epochs", "10", "--train-layers", "1", "--tail-epochs", "2",
            "--min-agreement", "0", *extra]


def test_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(train_args(tiny, out)) == 0
    text = capsys.readouterr().out
    assert "true \\ predicted" in text and "held-out top-1" in text
    for c in CLASSES:
        assert c in text

    # The export's layout, plus the self-test photos and the confusion plot.
    for f in ("model.onnx", "model.json", "fp32/model.onnx", "fp32/model.json", "selftest/expected.json",
              "confusion.png"):
        assert (out / f).is_file(), f
    m = json.loads((out / "model.json").read_text())
    assert set(REQUIRED_KEYS) <= set(m)
    assert m["precision"] == "int8" and m["labels"] == CLASSES and m["selftest"] == "selftest"
    assert m["output"]["shape"] == ["batch", 3] and m["architecture"]["num_classes"] == 3
    t = m["training"]
    assert t["classes"] == CLASSES
    assert t["counts"] == {"blue": {"train": 4, "held_out": 1, "skipped": 0},
                           "green": {"train": 4, "held_out": 2, "skipped": 0},
                           "red": {"train": 5, "held_out": 2, "skipped": 1}}
    assert t["split"] == {"seed": 0, "held_out_fraction": 0.25, "method": "stratified"}
    assert t["settings"]["views"] == 2 and t["settings"]["train_layers"] == 1 and t["settings"]["tail_epochs"] == 2
    assert t["settings"]["head_epochs"] == 10
    assert t["outcome"]["tail_loss"] is not None  # the last layer was trained too
    assert set(t["accuracy"]) == {"fp32", "int8"} and 0 <= t["accuracy"]["int8"] <= 1
    assert set(t["per_class_recall"]["int8"]) == set(CLASSES)
    matrix = np.array(t["confusion"]["int8"])
    assert matrix.shape == (3, 3) and matrix.sum(1).tolist() == [1, 2, 2]  # rows: the held-out images per class
    assert t["seconds"] > 0
    fp32 = json.loads((out / "fp32" / "model.json").read_text())
    assert fp32["precision"] == "fp32" and fp32["labels"] == CLASSES

    # Self-test photos: real held-out images named by class, with class indices into the labels.
    expected = json.loads((out / "selftest" / "expected.json").read_text())["top1"]
    assert 1 <= len(expected) <= 16
    for name, index in expected.items():
        assert name.startswith(f"{CLASSES[index]}__") and (out / "selftest" / name).is_file()

    # The trained int8 model runs through the runtime's session and gives 3 scores per image.
    from edge_infer.classifier.session import ModelSession
    from edge_infer.decoding.preprocess import PreprocessSpec, prepare

    session = ModelSession.load(out / "model.onnx")
    x = np.stack([prepare(out / "selftest" / n, PreprocessSpec()).tensor for n in expected])
    assert session.run(x).shape == (len(expected), 3)

    from PIL import Image

    with Image.open(out / "confusion.png") as img:
        img.load()
        assert img.width > 200 and img.height > 200


def test_verification_failure_exits_3(tiny, tmp_path, capsys):
    # No int8 model agrees with fp32 on more than 100% of the images.
    args = train_args(tiny, tmp_path / "out", "--min-agreement", "1.01")
    assert main(args) == 3
    assert "verification failed: int8 agrees with fp32" in capsys.readouterr().err


def test_split_is_stratified_and_deterministic():
    counts = {"a": 10, "b": 2, "c": 1, "d": 40}
    s = stratified_split(counts, 0.25, seed=0)
    assert {k: len(v) for k, v in s.held_out.items()} == {"a": 2, "b": 1, "c": 0, "d": 10}
    for k, n in counts.items():
        assert sorted(s.train[k] + s.held_out[k]) == list(range(n))
    assert stratified_split(counts, 0.25, seed=0) == s
    assert stratified_split(counts, 0.25, seed=1).held_out["d"] != s.held_out["d"]


def _error(capsys, args):
    code = main(args)
    return code, capsys.readouterr().err


def test_missing_data_folder(tiny, tmp_path, capsys):
    code, err = _error(capsys, train_args(tiny, tmp_path / "out", data=tmp_path / "nope"))
    assert code == 1 and f"--data {tmp_path / 'nope'}: no such folder" in err
    assert not (tmp_path / "out").exists()


def test_empty_data_folder(tiny, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = _error(capsys, train_args(tiny, tmp_path / "out", data=tmp_path / "empty"))
    assert code == 1 and "is empty: expected one sub-folder of images per class" in err


def test_one_class(tiny, tmp_path, capsys):
    write_class(tmp_path / "data" / "only", COLOURS["red"], 3, seed=0)
    code, err = _error(capsys, train_args(tiny, tmp_path / "out", data=tmp_path / "data"))
    assert code == 1 and "has 1 class folder (only); training needs at least 2" in err


def test_class_folder_without_images(tiny, tmp_path, capsys):
    write_class(tmp_path / "data" / "red", COLOURS["red"], 3, seed=0)
    (tmp_path / "data" / "blue").mkdir()
    (tmp_path / "data" / "blue" / "readme.txt").write_text("no pictures here")
    code, err = _error(capsys, train_args(tiny, tmp_path / "out", data=tmp_path / "data"))
    assert code == 1 and "class folder(s) blue hold no images" in err


def test_class_with_only_broken_images(tiny, tmp_path, capsys):
    write_class(tmp_path / "data" / "red", COLOURS["red"], 3, seed=0)
    (tmp_path / "data" / "blue").mkdir()
    for i in range(2):
        (tmp_path / "data" / "blue" / f"{i}.jpg").write_bytes(b"garbage")
    code, err = _error(capsys, train_args(tiny, tmp_path / "out", data=tmp_path / "data"))
    assert code == 1 and "class 'blue' has no readable images: all 2 of its files were skipped" in err


def test_unwritable_out(tiny, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / "file" / "out"
    code, err = _error(capsys, train_args(tiny, out))
    assert code == 1 and f"output folder {out} is not writable" in err


def test_bad_held_out_fraction(tiny, tmp_path, capsys):
    code, err = _error(capsys, train_args(tiny, tmp_path / "out", "--held-out", "1.5"))
    assert code == 1 and "--held-out must be between 0 and 1" in err


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "exit status: 0 ok; 3 verification failed" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")
