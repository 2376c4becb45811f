"""``edge-infer export``: weights -> ONNX fp32 -> calibrated int8 -> verified, each with its manifest."""
from __future__ import annotations

import datetime as dt
import logging
import platform
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..classifier.manifest import FORMAT_VERSION, MODEL_NAME, load_manifest, default_model_path, sha256_file, write_manifest
from ..decoding.preprocess import PreprocessSpec
from ..errors import ExportError, VerificationError
from ..sinks.writable import check_writable
from ..tools.bench_model import BurstResult, model_only
from .images import list_images, load_images, read_label_names, read_labels_csv, split
from .network import load_network
from .onnx_export import INPUT_NAME, OUTPUT_NAME, compare_with_torch, export_onnx
from .quantize import QuantSettings, quantize
from .verify import Verification, verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    weights: str
    images: Path
    out: Path
    labels_csv: Path | None = None
    class_names: Path | None = None
    width_mult: float = 1.0
    opset: int = 17
    calib_every: int = 4
    min_agreement: float = 0.90
    quant: QuantSettings = field(default_factory=QuantSettings)
    torchscript: Path | None = None
    ops_yaml: Path | None = None
    bench: bool = True


@dataclass
class ExportReport:
    int8_path: Path
    fp32_path: Path
    verification: Verification
    latency: list[BurstResult]
    sizes: dict[str, int]
    calib_images: int
    torch_max_diff: float

    def table(self) -> str:
        v = self.verification
        ms = {r.name: r.best_ms_per_image for r in self.latency}
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
        rows = [("", "fp32", "int8"),
                ("size (MB)", f"{self.sizes['fp32'] / 1e6:.2f}", f"{self.sizes['int8'] / 1e6:.2f}"),
                (f"top-1 ({v.labelled} labelled)", pct(v.fp32_top1), pct(v.int8_top1)),
                ("agreement with fp32", "100.0%", pct(v.agreement_top1)),
                ("ms/img, batch 1, 1 thread", f"{ms['fp32']:.2f}" if ms else "-", f"{ms['int8']:.2f}" if ms else "-")]
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{a:<{w}}  {b:>8}  {c:>8}" for a, b, c in rows) + (
            f"\n(calibrated on {self.calib_images} images, verified on {v.images} others; "
            f"{v.skipped} unreadable skipped)")


def run_export(opts: ExportOptions) -> ExportReport:
    out = opts.out.resolve()
    check_writable(out, ExportError)
    class_names = _class_names(opts.class_names)
    truth = read_labels_csv(opts.labels_csv) if opts.labels_csv else None
    model, impl, weights_sha = load_network(opts.weights, opts.width_mult, num_classes=len(class_names))
    spec = PreprocessSpec()
    calib_files, verify_files = split(list_images(opts.images), opts.calib_every)
    calib = load_images(calib_files, spec, "calibration")
    check = load_images(verify_files, spec, "preparing verification")

    fp32, int8, diff = export_models(model, out, spec, opts.opset, calib.tensors, check.tensors, opts.quant)
    verification = verify(fp32, int8, check, truth)
    latency = model_only({"fp32": fp32, "int8": int8}, check.tensors[:8], batches=(1,), threads=(1,),
                         rounds=10, min_burst_s=0.2) if opts.bench else []
    weights_file = "torchvision:IMAGENET1K_V1" if opts.weights == "torchvision" else Path(opts.weights).name
    common = common_manifest(spec, opts.opset, opts.width_mult, impl, class_names, weights_file, weights_sha,
                             {"images": len(calib), "skipped": len(calib.skipped), "every": opts.calib_every})
    passed = verification.agreement_top1 >= opts.min_agreement
    write_manifests(fp32, int8, common, opts.quant,
                    {**verification.to_dict(), "min_agreement": opts.min_agreement, "passed": passed,
                     "latency_ms_batch1": {r.name: round(r.best_ms_per_image, 3) for r in latency}})
    if opts.torchscript or opts.ops_yaml:
        from .torchscript import write_torchscript

        write_torchscript(model, spec.crop, opts.torchscript, opts.ops_yaml)
    report = ExportReport(int8, fp32, verification, latency,
                          {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}, len(calib), diff)
    if not passed:
        raise VerificationError(
            f"int8 agrees with fp32 on {100 * verification.agreement_top1:.1f}% of {verification.images} images, "
            f"under --min-agreement {100 * opts.min_agreement:.1f}%\n{report.table()}")
    return report


def export_models(model, out: Path, spec: PreprocessSpec, opset: int, calib: np.ndarray, check: np.ndarray,  # type: ignore[no-untyped-def]
                  quant: QuantSettings) -> tuple[Path, Path, float]:
    """The steps ``export`` and ``train`` share: torch -> ``out/fp32/model.onnx`` (checked against torch on
    ``check``) -> ``out/model.onnx`` calibrated on ``calib``. Returns (fp32, int8, max |torch - ONNX|)."""
    fp32 = out / "fp32" / MODEL_NAME
    int8 = out / MODEL_NAME
    fp32.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edge-infer-export-") as tmp:
        export_onnx(model, fp32, spec.crop, opset)
        diff = compare_with_torch(model, fp32, check[:8])
        log.info("ONNX fp32 matches torch (max |diff| %.2e)", diff)
        quantize(fp32, int8, calib, quant, Path(tmp))
    return fp32, int8, diff


def common_manifest(spec: PreprocessSpec, opset: int, width_mult: float, impl: str, class_names: list[str],
                    weights_file: str, weights_sha: str | None, calibration: dict[str, Any]) -> dict[str, Any]:
    """What both manifests (fp32 and int8) say."""
    return {
        "format_version": FORMAT_VERSION, "name": "mobilenet_v2",
        "architecture": {"family": "MobileNetV2", "width_mult": width_mult,
                         "num_classes": len(class_names), "implementation": impl},
        "opset": opset,
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, spec.crop, spec.crop], "dtype": "float32",
                  "layout": "NCHW"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", len(class_names)], "kind": "logits"},
        "preprocess": spec.to_dict(),
        "source_weights": {"file": weights_file, "sha256": weights_sha},
        "calibration": calibration,
        "tools": _tool_versions(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "labels": class_names,
    }


def write_manifests(fp32: Path, int8: Path, common: dict[str, Any], quant: QuantSettings,
                    verification: dict[str, Any], **int8_extra: Any) -> None:
    write_manifest(fp32, {**common, "precision": "fp32", "sha256": sha256_file(fp32)})
    write_manifest(int8, {**common, "precision": "int8", "sha256": sha256_file(int8),
                          "quantization": quant.to_dict(), "verification": verification, **int8_extra})


def _class_names(path: Path | None) -> list[str]:
    if path is not None:
        return read_label_names(path)
    # The embedded model's manifest carries ImageNet's 1000 names in torchvision's order.
    try:
        return list(load_manifest(default_model_path()).labels)
    except Exception as e:  # noqa: BLE001 - any failure here means: ask for the file
        raise ExportError(f"no class names: pass --class-names FILE (one name a line) ({e})") from e


def _tool_versions() -> dict[str, Any]:
    import numpy
    import onnx
    import onnxruntime
    import torch

    return {"edge_infer": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": numpy.__version__,
            "machine": platform.machine()}
