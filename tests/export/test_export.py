"""Export round trip on a small random-weight network, and the export's handling of bad input."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edge_infer.classifier.manifest import REQUIRED_KEYS
from edge_infer.cli import main
from tests.support.images import write_images

CLASSES = [f"class_{i}" for i in range(10)]


@pytest.fixture(scope="module")
def small_net(torch_module, tmp_path_factory):
    """A width-0.35, 10-class MobileNetV2 with random weights, saved as a state dict, plus sample images."""
    from edge_infer.export.mobilenet import MobileNetV2

    torch_module.manual_seed(0)
    d = tmp_path_factory.mktemp("small")
    model = MobileNetV2(width_mult=0.35, num_classes=10).eval()
    torch_module.save(model.state_dict(), d / "weights.pth")
    (d / "names.txt").write_text("\n".join(CLASSES) + "\n")
    write_images(d / "images", 12)
    return model, d


def export_args(d, out, *extra):
    return ["export", "--weights", str(d / "weights.pth"), "--images", str(d / "images"), "--out", str(out),
            "--class-names", str(d / "names.txt"), "--width-mult", "0.35", "--min-agreement", "0", "--no-bench",
            *extra]


def test_round_trip(small_net, tmp_path, capsys, torch_module):
    model, d = small_net
    out = tmp_path / "out"
    assert main(export_args(d, out, "--torchscript", str(out / "m.pt"), "--ops-yaml", str(out / "ops.yaml"))) == 0
    table = capsys.readouterr().out
    assert "agreement with fp32" in table and "size (MB)" in table

    # fp32 ONNX agrees with torch on real (prepared) images, with a dynamic batch axis.
    from edge_infer.classifier.session import ModelSession, make_ort_session
    from edge_infer.decoding.preprocess import PreprocessSpec
    from edge_infer.export.images import list_images, load_images

    x = load_images(list_images(d / "images")[:5], PreprocessSpec(), "t").tensors
    with torch_module.no_grad():
        want = model(torch_module.from_numpy(x)).numpy()
    got = make_ort_session(out / "fp32" / "model.onnx").run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)

    # The int8 model is really quantized (QDQ with int8 weights) and runs through the runtime's session.
    q = onnx.load(str(out / "model.onnx"))
    ops = {n.op_type for n in q.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(i.data_type == onnx.TensorProto.INT8 for i in q.graph.initializer)
    session = ModelSession.load(out / "model.onnx")
    logits = session.run(x)
    assert logits.shape == (5, 10) and np.isfinite(logits).all()

    manifest = json.loads((out / "model.json").read_text())
    for key in (*REQUIRED_KEYS, "architecture", "opset", "source_weights", "quantization", "verification", "tools"):
        assert key in manifest, key
    assert manifest["architecture"]["width_mult"] == 0.35 and manifest["labels"] == CLASSES
    assert manifest["verification"]["images"] == 9 and manifest["calibration"]["images"] == 3
    assert manifest["quantization"]["per_channel"] is True
    assert json.loads((out / "fp32" / "model.json").read_text())["precision"] == "fp32"
    assert (out / "m.pt").stat().st_size > 0
    assert "aten::_convolution" in (out / "ops.yaml").read_text()


def test_verification_threshold_fails_the_export(small_net, tmp_path, capsys):
    _, d = small_net
    args = export_args(d, tmp_path / "out")
    args[args.index("--min-agreement") + 1] = "1.01"  # unreachable
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "verification failed" in err and "--min-agreement" in err


def _run_failing(args, capsys) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_missing_weights_file(small_net, tmp_path, capsys):
    _, d = small_net
    args = export_args(d, tmp_path / "out")
    args[args.index("--weights") + 1] = str(tmp_path / "nope.pth")
    assert "nope.pth does not exist" in _run_failing(args, capsys)


def test_weights_with_wrong_keys(small_net, tmp_path, capsys, torch_module):
    _, d = small_net
    torch_module.save({"foo.weight": torch_module.zeros(3)}, tmp_path / "bad.pth")
    args = export_args(d, tmp_path / "out")
    args[args.index("--weights") + 1] = str(tmp_path / "bad.pth")
    err = _run_failing(args, capsys)
    assert "bad.pth do not fit MobileNetV2" in err and "missing keys" in err


def test_weights_file_that_is_not_a_state_dict(small_net, tmp_path, capsys):
    _, d = small_net
    (tmp_path / "junk.pth").write_bytes(b"this is not a zip or pickle")
    args = export_args(d, tmp_path / "out")
    args[args.index("--weights") + 1] = str(tmp_path / "junk.pth")
    assert "junk.pth is not a loadable torch state dict" in _run_failing(args, capsys)


def test_calibration_folder_without_images(small_net, tmp_path, capsys):
    _, d = small_net
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    args = export_args(d, tmp_path / "out")
    args[args.index("--images") + 1] = str(tmp_path / "empty")
    assert "holds no images" in _run_failing(args, capsys)


def test_broken_calibration_files_are_skipped_and_counted(small_net, tmp_path, capsys, caplog):
    _, d = small_net
    images = tmp_path / "images"
    write_images(images, 10)
    (images / "img_000.jpg").write_bytes(b"")  # a calibration image (every 4th from index 0)
    (images / "img_005.jpg").write_text("not a jpeg")  # a verification image
    args = export_args(d, tmp_path / "out")
    args[args.index("--images") + 1] = str(images)
    assert main(args) == 0
    manifest = json.loads((tmp_path / "out" / "model.json").read_text())
    assert manifest["calibration"]["skipped"] == 1 and manifest["verification"]["skipped"] == 1
    assert sum("skipping" in r.message for r in caplog.records) == 2


def test_output_folder_that_cannot_be_written(small_net, tmp_path, capsys):
    _, d = small_net
    (tmp_path / "a_file").write_text("")
    err = _run_failing(export_args(d, tmp_path / "a_file" / "out"), capsys)
    assert "a_file/out is not writable" in err


def test_torchvision_weights_without_torchvision_say_to_pass_a_file(small_net, tmp_path, capsys):
    from edge_infer.export.mobilenet import build_mobilenet_v2

    if build_mobilenet_v2(0.35)[1] == "torchvision":
        pytest.skip("torchvision is importable here; the offline message is tested where it is not")
    _, d = small_net
    args = export_args(d, tmp_path / "out")
    args[args.index("--weights") + 1] = "torchvision"
    assert "pass --weights PATH" in _run_failing(args, capsys)
