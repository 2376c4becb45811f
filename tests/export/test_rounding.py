"""Weight rounding and bias correction of the int8 export (export/rounding.py, export/bias_correction.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_infer.export.bias_correction import _output_shift
from edge_infer.export.rounding import optimise_rounding, patches
from tests.support.images import write_images


def _loss(w, q, scale, cov, group):
    out, k = w.shape[0], cov.shape[1]
    err = ((q.astype(np.float64) - w / scale.reshape(-1, *([1] * (w.ndim - 1)))) * scale.reshape(
        -1, *([1] * (w.ndim - 1)))).reshape(group, out // group, k)
    return float(np.einsum("grk,gkl,grl->", err, cov, err))


def test_rounding_beats_nearest_and_moves_each_weight_at_most_one_step():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 8, 1, 1))
    scale = np.abs(w).reshape(16, -1).max(1) / 63
    q = np.clip(np.round(w / scale[:, None, None, None]), -64, 64).astype(np.int8)
    a = rng.normal(size=(8, 8))
    cov = (a @ a.T + 0.1 * np.eye(8))[None]  # correlated inputs: where nearest rounding is not optimal
    new, ratio = optimise_rounding(w, q, scale, cov, group=1)
    assert new.dtype == np.int8 and new.shape == q.shape
    t = w / scale[:, None, None, None]
    assert np.all((new >= np.floor(t)) & (new <= np.floor(t) + 1))
    assert new.min() >= q.min() and new.max() <= q.max()  # 7-bit weights stay 7-bit
    assert ratio < 0.9
    assert _loss(w, new, scale, cov, 1) < 0.9 * _loss(w, q, scale, cov, 1)


def test_depthwise_rounding_uses_each_channels_own_inputs():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 1, 3, 3))
    scale = np.abs(w).reshape(6, -1).max(1) / 127
    q = np.round(w / scale[:, None, None, None]).astype(np.int8)
    a = rng.normal(size=(6, 9, 9))
    cov = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(9)[None]
    new, ratio = optimise_rounding(w, q, scale, cov, group=6)
    assert ratio < 1 and _loss(w, new, scale, cov, 6) < _loss(w, q, scale, cov, 6)


def test_patches_and_output_shift_match_a_real_convolution(torch_module):
    """The patch layout matches the weights' (in, kh, kw) order, and the bias shift is the mean conv output."""
    torch = torch_module
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, 4, 9, 9)).astype(np.float32)
    for group, out in ((1, 6), (4, 4)):
        dw = rng.normal(size=(out, 4 // group, 3, 3))
        geometry = {"group": group, "strides": [2, 2], "pads": [0, 0, 0, 0], "dilations": [1, 1]}
        y = torch.nn.functional.conv2d(torch.from_numpy(x).double(), torch.from_numpy(dw), stride=2,
                                       groups=group).numpy()
        p = patches(x, (3, 3), geometry)  # (group, K, L)
        via_patches = np.einsum("grk,gkl->grl", dw.reshape(group, out // group, -1), p).reshape(out, -1)
        np.testing.assert_allclose(via_patches, y.reshape(out, -1), rtol=1e-5, atol=1e-5)
        # The bias shift from a weight error dw, given each input channel's mean: with a constant input per
        # channel (and no padding) every output sees exactly that mean, so the shift is the conv's output.
        c = rng.normal(size=4)
        flat = np.broadcast_to(c[None, :, None, None], x.shape).copy()
        y = torch.nn.functional.conv2d(torch.from_numpy(flat), torch.from_numpy(dw), stride=2, groups=group).numpy()
        node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], group=group)
        np.testing.assert_allclose(_output_shift(node, dw, c), y[0, :, 0, 0], rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def small_onnx(torch_module, tmp_path_factory):
    from edge_infer.decoding.preprocess import PreprocessSpec
    from edge_infer.export.images import list_images, load_images
    from edge_infer.export.mobilenet import MobileNetV2
    from edge_infer.export.onnx_export import export_onnx

    torch_module.manual_seed(0)
    d = tmp_path_factory.mktemp("round")
    model = MobileNetV2(width_mult=0.35, num_classes=10).eval()
    export_onnx(model, d / "fp32.onnx", 224, 17)
    write_images(d / "images", 16)
    x = load_images(list_images(d / "images"), PreprocessSpec(), "t").tensors
    return d, x


def test_rounding_and_bias_correction_cut_the_int8_error_and_keep_the_graph(small_onnx, tmp_path):
    from edge_infer.classifier.session import make_ort_session
    from edge_infer.export.quantize import QuantSettings, quantize

    d, x = small_onnx
    calib, check = x[:8], x[8:]
    plain = dataclasses.replace(QuantSettings(), weight_rounding=False, bias_correction=False)
    quantize(d / "fp32.onnx", tmp_path / "plain.onnx", calib, plain, tmp_path)
    quantize(d / "fp32.onnx", tmp_path / "tuned.onnx", calib, QuantSettings(), tmp_path)

    def logits(path, imgs):
        s = make_ort_session(path)
        return np.concatenate([s.run(None, {"input": imgs[i:i + 1]})[0] for i in range(len(imgs))])

    for imgs in (calib, check):
        want = logits(d / "fp32.onnx", imgs)
        err_plain = np.mean((logits(tmp_path / "plain.onnx", imgs) - want) ** 2)
        err_tuned = np.mean((logits(tmp_path / "tuned.onnx", imgs) - want) ** 2)
        assert err_tuned < err_plain, (err_tuned, err_plain)

    a, b = onnx.load(str(tmp_path / "plain.onnx")), onnx.load(str(tmp_path / "tuned.onnx"))
    assert [n.op_type for n in a.graph.node] == [n.op_type for n in b.graph.node]
    ia = {i.name: numpy_helper.to_array(i) for i in a.graph.initializer}
    ib = {i.name: numpy_helper.to_array(i) for i in b.graph.initializer}
    assert ia.keys() == ib.keys()
    moved = 0
    for name, va in ia.items():
        if va.dtype == np.int8:  # weights: at most one step from nearest, never outside the layer's range
            diff = np.abs(va.astype(int) - ib[name].astype(int))
            assert diff.max() <= 1 and ib[name].min() >= va.min() and ib[name].max() <= va.max(), name
            moved += int(diff.sum())
        elif va.dtype != np.int32:  # scales and zero points are onnxruntime's
            np.testing.assert_array_equal(va, ib[name], err_msg=name)
    assert moved > 0
