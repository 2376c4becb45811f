"""Static int8 quantization (QDQ, per-channel weights) calibrated on prepared sample images.

Why these settings (measured; see README "Model" and the export's closing table):
- x86 CPUs without VNNI run onnxruntime's uint8 x int8 convolutions with VPMADDUBSW, whose int16 pair sums
  saturate when 8-bit weights meet large activations; the Model Zoo's int8 MobileNetV2 loses ~7 points of
  top-1 there. Weights of the dense (1x1 and first) convolutions and the classifier therefore use 7 bits
  (``reduce_range``), which cannot saturate. VNNI CPUs and ARM are unaffected either way.
- Depthwise convolutions run in a kernel that accumulates in int32 on every CPU, so they keep 8 bits;
  with nine weights per channel they are the layers that lose most from a seventh bit.
- Activations: the 99.99th percentile of each tensor's calibration values, not its min/max: a few outliers
  would otherwise stretch the 8-bit step for everyone (measured best among 99.9 .. 99.999 and min/max).
- The classifier's output (the logits) stays float: quantizing it to 8 bits over its whole range makes
  close top-1 decisions flip; the Gemm's weights and inputs are still int8.
- Then, on the same calibration images: each Conv's int8 weights are re-rounded (one step up or down from
  nearest, within the layer's range) to minimise its output error for the inputs the int8 model feeds it
  (rounding.py), and the mean shift each layer's rounding leaves is folded into its bias
  (bias_correction.py). Scales, zero points and the graph stay onnxruntime's: same speed, same 7-bit
  safety. On 800 held-out variants of the shared photos this halves the int8 loss (fp32 76.75%, int8
  75.62% -> 76.25%; README "Accuracy and speed"). ``train`` gets it too: it calls ``quantize``.
Measured by emulating a CPU without VNNI (``qemu-x86_64 -cpu Haswell``): see tools/quant_check.sh.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExportError
from .bias_correction import correct_biases
from .onnx_export import INPUT_NAME
from .rounding import round_weights

log = logging.getLogger(__name__)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class QuantSettings:
    """What ``quantize_static`` is told; recorded in the manifest as is."""

    format: str = "QDQ"
    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    calibration: str = "percentile"
    percentile: float = 99.99  # of |activation|, for calibration == "percentile"
    reduce_range: bool = True  # 7-bit weights on the dense layers (see the module docstring)
    depthwise_full_range: bool = True  # 8-bit depthwise weights
    exclude_nodes: tuple[str, ...] = ()
    float_logits: bool = True  # the classifier's output stays float (see the module docstring)
    calib_batch: int = 1  # histogram calibrators need equal-sized batches; 1 always divides
    weight_rounding: bool = True  # per-layer rounding for the calibration inputs (rounding.py)
    bias_correction: bool = True  # see bias_correction.py and the module docstring

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["exclude_nodes"] = list(self.exclude_nodes)
        return d


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over an in-memory batch of prepared images."""

    def __init__(self, tensors: np.ndarray, batch: int) -> None:
        self._batches = iter([tensors[i:i + batch] for i in range(0, len(tensors), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        b = next(self._batches, None)
        return None if b is None else {INPUT_NAME: b}


def depthwise_weights(model_path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(model_path))
    return [n.input[1] for n in m.graph.node
            if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]


def quantize(fp32_path: Path, out_path: Path, calib: np.ndarray, settings: QuantSettings, workdir: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if settings.calibration not in CALIBRATION_METHODS:
        raise ExportError(f"calibration method must be one of {CALIBRATION_METHODS}, got {settings.calibration!r}")
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    # Shape inference and fusions first, as onnxruntime recommends, so that every Conv gets its own scales.
    pre = workdir / "preprocessed.onnx"
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
    overrides: dict[str, list[dict[str, Any]]] = {}
    if settings.reduce_range and settings.depthwise_full_range:
        overrides = {w: [{"axis": 0, "reduce_range": False}] for w in depthwise_weights(pre)}
    extra: dict[str, Any] = {"CalibPercentile": settings.percentile}
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    if settings.float_logits:
        extra["OpTypesToExcludeOutputQuantization"] = ["Gemm"]
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration]
    quantize_static(
        str(pre), str(out_path), _Reader(calib, settings.calib_batch),
        quant_format=QuantFormat[settings.format], per_channel=settings.per_channel,
        reduce_range=settings.reduce_range, activation_type=types[settings.activation_type],
        weight_type=types[settings.weight_type], calibrate_method=method,
        nodes_to_exclude=list(settings.exclude_nodes),
        extra_options=extra,
    )
    if settings.weight_rounding:
        round_weights(pre, out_path, calib)
    if settings.bias_correction:
        correct_biases(pre, out_path, calib)
    pre.unlink(missing_ok=True)
