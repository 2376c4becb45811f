"""Weight rounding chosen for each layer's real inputs (AdaRound's quadratic form, Nagel et al. 2020).

Rounding every weight to the nearest int8 step is not the best choice for the layer's output: errors of
neighbouring weights that meet correlated inputs add up. For each Conv we pick, per weight, the step below
or above w / scale (never further, and never outside the range the layer already uses, so 7-bit weights
stay 7-bit and CPUs without VNNI stay safe), minimising the layer's mean squared output error
E[((W_int8 - W) x)^2] = dW^T E[x x^T] dW, with E[x x^T] measured on the calibration images as the int8
model itself sees them. A few sweeps of coordinate descent over the weights, for all output channels at
once. Only the int8 weight initializers change; scales, zero points and the graph are onnxruntime's, so
the optimised model and its speed are the same.

The classifier (Gemm, 1280 inputs) keeps nearest rounding: ~50 calibration images cannot estimate a
1280 x 1280 input covariance.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .onnx_export import INPUT_NAME, session_with_outputs

log = logging.getLogger(__name__)
MAX_POSITIONS = 4096  # per image and layer: every k-th output position beyond that (big early maps)
DAMPING = 0.01  # of the mean input variance, added to E[x x^T]'s diagonal against over-fitting
SWEEPS = 4


def round_weights(fp32_path: Path, qdq_path: Path, calib: np.ndarray) -> dict[str, float]:
    """Rewrite ``qdq_path``'s Conv weights in place; returns each layer's output MSE ratio (new / nearest)."""
    import onnx
    from onnx import numpy_helper

    fp32_w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32_path)).graph.initializer}
    qdq = onnx.load(str(qdq_path))
    produced = {o: n for n in qdq.graph.node for o in n.output}
    init = {i.name: i for i in qdq.graph.initializer}
    layers = []  # (conv node, fp32 weight, weight DequantizeLinear node)
    for n in qdq.graph.node:
        w_dq = produced.get(n.input[1]) if n.op_type == "Conv" else None
        if w_dq is None or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in init:
            continue
        w_fp = fp32_w.get(w_dq.input[0].removesuffix("_quantized"))
        if w_fp is not None and _conv_geometry(n)["dilations"] == [1, 1]:
            layers.append((n, w_fp, w_dq))
    cov = _patch_covariances(qdq, [n for n, _, _ in layers], calib)
    ratios = {}
    for n, w_fp, w_dq in layers:
        q = numpy_helper.to_array(init[w_dq.input[0]])
        scale = numpy_helper.to_array(init[w_dq.input[1]]).astype(np.float64)
        zp = numpy_helper.to_array(init[w_dq.input[2]]).astype(np.float64) if len(w_dq.input) > 2 else 0.0
        if np.any(zp != 0) or scale.size != q.shape[0]:
            continue  # per-channel symmetric weights only (what quantize() asks for)
        new, ratio = optimise_rounding(w_fp, q, scale, cov[n.output[0]], _conv_geometry(n)["group"])
        init[w_dq.input[0]].CopyFrom(numpy_helper.from_array(new, w_dq.input[0]))
        ratios[n.output[0]] = ratio
    if ratios:
        log.info("weight rounding: %d layers, output MSE vs nearest rounding: median %.2f, worst %.2f",
                 len(ratios), float(np.median(list(ratios.values()))), max(ratios.values()))
    onnx.save(qdq, str(qdq_path))
    return ratios


def optimise_rounding(w: np.ndarray, q: np.ndarray, scale: np.ndarray, cov: np.ndarray,
                      group: int) -> tuple[np.ndarray, float]:
    """Int8 weights (same shape and dtype as ``q``) minimising sum_rows dW^T cov_g dW; and the loss ratio.

    ``w`` (out, in/group, kh, kw) fp32; ``q`` its nearest rounding; ``scale`` per output channel;
    ``cov`` (group, K, K) with K = in/group * kh * kw, the per-group input patch second moments.
    """
    out = w.shape[0]
    k = cov.shape[1]
    lo, hi = int(q.min()), int(q.max())
    t = (w.astype(np.float64) / scale.reshape(-1, *([1] * (w.ndim - 1)))).reshape(group, out // group, k)
    cur = q.astype(np.float64).reshape(group, out // group, k)
    down = np.clip(np.floor(t), lo, hi)
    up = np.clip(np.floor(t) + 1, lo, hi)
    s = scale.reshape(group, out // group, 1)
    c = cov + DAMPING * np.mean(np.diagonal(cov, axis1=1, axis2=2)) * np.eye(k)[None]
    err = (cur - t) * s  # dW per weight
    grad = np.einsum("grk,gkl->grl", err, c)  # c dW, per row
    before = float(np.einsum("grk,grk->", err, grad))
    diag = np.diagonal(c, axis1=1, axis2=2)  # (group, K)
    for _ in range(SWEEPS):
        changed = 0
        for j in range(k):
            other = np.where(cur[:, :, j] == down[:, :, j], up[:, :, j], down[:, :, j])
            delta = (other - cur[:, :, j]) * s[:, :, 0]
            gain = 2 * delta * grad[:, :, j] + delta * delta * diag[:, j][:, None]
            take = (gain < 0) & (delta != 0)
            if not take.any():
                continue
            d = np.where(take, delta, 0.0)
            cur[:, :, j] = np.where(take, other, cur[:, :, j])
            grad += d[:, :, None] * c[:, None, j, :]
            changed += int(take.sum())
        if not changed:
            break
    err = (cur - t) * s
    after = float(np.einsum("grk,gkl,grl->", err, c, err))
    return cur.reshape(q.shape).astype(q.dtype), after / before if before > 0 else 1.0


def _conv_geometry(node) -> dict:  # type: ignore[no-untyped-def]
    a = {x.name: x for x in node.attribute}
    ints = lambda name, d: list(a[name].ints) if name in a else d  # noqa: E731
    return {"group": a["group"].i if "group" in a else 1, "strides": ints("strides", [1, 1]),
            "pads": ints("pads", [0, 0, 0, 0]), "dilations": ints("dilations", [1, 1])}


def patches(x: np.ndarray, kernel: tuple[int, int], geometry: dict) -> np.ndarray:
    """(1, C, H, W) -> (group, C/group * kh * kw, positions), in the order of the weights' (in, kh, kw)."""
    kh, kw = kernel
    top, left, bottom, right = geometry["pads"]
    sh, sw = geometry["strides"]
    xp = np.pad(x[0], ((0, 0), (top, bottom), (left, right)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # C,Ho,Wo,kh,kw
    c = win.shape[0]
    p = win.reshape(c, -1, kh * kw).transpose(0, 2, 1)  # C, kh*kw, L
    g = geometry["group"]
    p = p.reshape(g, (c // g) * kh * kw, -1)
    step = max(1, p.shape[2] // MAX_POSITIONS)
    return p[:, :, ::step]


def _patch_covariances(model, convs: list, calib: np.ndarray) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """E[patch patch^T] of each conv's input, per group, as the int8 model computes it."""
    from onnx import numpy_helper

    init = {i.name: i for i in model.graph.initializer}
    produced = {o: n for n in model.graph.node for o in n.output}
    inputs = sorted({n.input[0] for n in convs})
    s = session_with_outputs(model, inputs)
    kernels = {n.output[0]: numpy_helper.to_array(init[produced[n.input[1]].input[0]]).shape[2:] for n in convs}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for i in range(len(calib)):
        acts = dict(zip(inputs, s.run(inputs, {INPUT_NAME: calib[i:i + 1]})))
        for n in convs:
            p = patches(acts[n.input[0]], kernels[n.output[0]], _conv_geometry(n))
            c = np.matmul(p, p.transpose(0, 2, 1)).astype(np.float64)
            key = n.output[0]
            sums[key] = sums[key] + c if key in sums else c
            counts[key] = counts.get(key, 0) + p.shape[2]
    return {k: v / counts[k] for k, v in sums.items()}
