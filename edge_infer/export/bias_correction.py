"""Bias correction of a QDQ model's weight rounding (Nagel et al. 2019, "Data-Free Quantization", 4.2).

Rounding each weight to 7 or 8 bits shifts the layer's mean output by (W_int8 - W_fp32) . E[x]: a few
hundredths per channel, most in the depthwise layers (nine weights per channel, nothing to average the
rounding out), and MobileNetV2's 53 layers add them up. We measure E[x], each layer's mean input per
channel, as the int8 model itself sees it on the calibration images, and subtract that shift from the
layer's bias. Only the int32 bias initializers change: the weights, scales, zero points and the graph stay
as onnxruntime made them, so the optimised graph (QLinearConv ...) and its speed are the same, and so are
the 7-bit weights that keep CPUs without VNNI safe.

Only the shift a layer's own weights cause is removed. Matching each layer's whole mean output to the
fp32 network's instead (the "empirical" variant) also chases the shifts inherited from clipped
activations upstream; measured here, it made the logits' error on the calibration images three times
larger, not smaller.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .onnx_export import INPUT_NAME, session_with_outputs

log = logging.getLogger(__name__)


def correct_biases(fp32_path: Path, qdq_path: Path, calib: np.ndarray) -> dict[str, float]:
    """Rewrite ``qdq_path``'s Conv and Gemm biases in place; returns each layer's mean |shift| removed."""
    import onnx
    from onnx import numpy_helper

    fp32_w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32_path)).graph.initializer}
    qdq = onnx.load(str(qdq_path))
    produced = {o: n for n in qdq.graph.node for o in n.output}
    init = {i.name: i for i in qdq.graph.initializer}
    arr = lambda name: numpy_helper.to_array(init[name]).astype(np.float64)  # noqa: E731
    layers = []  # (node, its input tensor, weight error W_int8 - W_fp32, bias DequantizeLinear node)
    for n in qdq.graph.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3:
            continue
        w_dq, b_dq = produced.get(n.input[1]), produced.get(n.input[2])
        if w_dq is None or b_dq is None or w_dq.op_type != "DequantizeLinear" or b_dq.op_type != "DequantizeLinear":
            continue
        w_fp = fp32_w.get(w_dq.input[0].removesuffix("_quantized"))
        if w_fp is None or b_dq.input[0] not in init or not _plain(n):
            continue
        layers.append((n, n.input[0], _dequantize(arr, w_dq) - w_fp, b_dq))
    means = _channel_means(qdq, sorted({x for _, x, _, _ in layers}), calib)
    removed = {}
    for n, x, dw, b_dq in layers:
        shift = _output_shift(n, dw, means[x])
        scale = arr(b_dq.input[1])
        b = numpy_helper.to_array(init[b_dq.input[0]]).astype(np.float64) * scale - shift
        q = np.clip(np.round(b / scale), -2**31, 2**31 - 1).astype(np.int32)
        init[b_dq.input[0]].CopyFrom(numpy_helper.from_array(q, b_dq.input[0]))
        removed[n.output[0]] = float(np.abs(shift).mean())
    log.info("bias correction: %d layers, mean |per-channel shift| %.4f, largest layer's %.4f",
             len(removed), np.mean(list(removed.values())), max(removed.values()))
    onnx.save(qdq, str(qdq_path))
    return removed


def _plain(node) -> bool:  # type: ignore[no-untyped-def]
    """A Conv without dilation, or a Gemm computing x . W^T (what torch's Linear exports)."""
    a = {x.name: x for x in node.attribute}
    if node.op_type == "Gemm":
        return a["transB"].i == 1 if "transB" in a else False
    return all(d == 1 for d in a["dilations"].ints) if "dilations" in a else True


def _dequantize(arr, dq) -> np.ndarray:  # type: ignore[no-untyped-def]
    q, scale = arr(dq.input[0]), arr(dq.input[1])
    zp = arr(dq.input[2]) if len(dq.input) > 2 else np.zeros_like(scale)
    shape = (-1,) + (1,) * (q.ndim - 1) if scale.ndim == 1 and scale.size > 1 else ()
    return (q - zp.reshape(shape)) * scale.reshape(shape) if shape else (q - zp) * scale


def _output_shift(node, dw: np.ndarray, x_mean: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Mean output change per channel caused by the weight error ``dw``, given the mean input per channel.

    Padding makes border outputs see fewer inputs; ignoring that costs little on 7x7 .. 112x112 maps.
    """
    if node.op_type == "Gemm":
        return dw @ x_mean
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    out_ch, in_per_group = dw.shape[:2]
    summed = dw.reshape(out_ch, in_per_group, -1).sum(axis=2)  # (out, in/group)
    x = x_mean.reshape(group, in_per_group)
    per_group = out_ch // group
    return np.einsum("gij,gj->gi", summed.reshape(group, per_group, in_per_group), x).reshape(out_ch)


def _channel_means(model, tensors: list[str], calib: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Mean of each named tensor per channel (axis 1) over the images and positions."""
    s = session_with_outputs(model, tensors)
    sums = {t: 0.0 for t in tensors}
    for i in range(len(calib)):
        for t, r in zip(tensors, s.run(tensors, {INPUT_NAME: calib[i:i + 1]})):
            r = r.astype(np.float64)
            sums[t] = sums[t] + r.reshape(r.shape[0], r.shape[1], -1).mean(axis=(0, 2))
    return {t: v / len(calib) for t, v in sums.items()}
