"""torch -> ONNX fp32, checked by ``onnx.checker`` and by comparing onnxruntime's output with torch's."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from ..classifier.session import make_ort_session
from ..errors import ExportError

log = logging.getLogger(__name__)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET = 13


def export_onnx(model, path: Path, crop: int, opset: int) -> None:  # type: ignore[no-untyped-def]
    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"--opset must be >= {MIN_OPSET} (per-channel QDQ needs it), got {opset}")
    dummy = torch.zeros(1, 3, crop, crop)
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo, which needs onnxscript and
        # gives an identical graph for this network; the legacy one keeps `export` light on a device.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def compare_with_torch(model, path: Path, batch: np.ndarray, atol: float = 1e-3) -> float:  # type: ignore[no-untyped-def]
    """Max |torch - onnxruntime| over the logits of ``batch``; raises when it exceeds ``atol``."""
    import torch

    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    got = make_ort_session(path).run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    diff = float(np.abs(expected - got).max())
    if diff > atol:
        raise ExportError(f"onnxruntime output differs from torch's by {diff:.2e} (allowed {atol:.0e})")
    return diff


def session_with_outputs(model, names: list[str], threads: int = 2):  # type: ignore[no-untyped-def]
    """An onnxruntime session of ``model`` (an in-memory ModelProto, left unchanged) that also returns the
    named intermediate tensors: what the int8 model really feeds each layer, for rounding and bias correction."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for name in names:
        if name not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
