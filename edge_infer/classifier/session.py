"""One onnxruntime session with its manifest: load, check the input spec, warm up, run.

A ``ModelSession`` is run by the daemon's inference threads (several at once: onnxruntime's ``run`` is
thread-safe) or by the caller of ``classify``; nothing else calls ``run`` on it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .manifest import Manifest, default_model_path, load_manifest, sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionOptions:
    """onnxruntime settings; defaults suit a small device running one model."""

    intra_op_threads: int = 0  # 0: onnxruntime's choice (one per physical core)
    # Spinning keeps a core busy between runs for a few percent of latency; an edge daemon is mostly idle.
    allow_spinning: bool = False
    graph_optimization: str = "all"  # all | extended | basic | disabled
    memory_arena: bool = True


_GRAPH_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED",
                 "basic": "ORT_ENABLE_BASIC", "disabled": "ORT_DISABLE_ALL"}


def make_ort_session(path: str | os.PathLike[str], options: SessionOptions = SessionOptions()):  # type: ignore[no-untyped-def]
    import onnxruntime as ort  # imported here: importing edge_infer must stay cheap

    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _GRAPH_LEVELS[options.graph_optimization])
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    # Without the arena, every run allocates and frees its activations through malloc, which fragments
    # (measured: +12 MB RSS over 100 mixed batches) or, with a fixed mmap threshold, page-faults ~3 ms of
    # CPU per image back in. The arena's cost is bounded by the largest batch, which warm-up runs first.
    so.enable_cpu_mem_arena = options.memory_arena
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped exceptions for bad files
        raise ModelError(f"cannot load model {path}: {e}") from e


class ModelSession:
    """A loaded model: ``run(batch) -> logits``, with its manifest for preprocessing and labels."""

    def __init__(self, path: Path, manifest: Manifest, options: SessionOptions = SessionOptions(),
                 verify_sha256: bool = True) -> None:
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        self.path = path
        self.manifest = manifest
        self.sha256 = sha256_file(path)
        if verify_sha256 and manifest.sha256 != self.sha256:
            raise ModelError(f"model {path} has sha256 {self.sha256}, its manifest says {manifest.sha256}")
        self._session = make_ort_session(path, options)
        self._check_io()

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, options: SessionOptions = SessionOptions()) -> "ModelSession":
        """The model at ``path`` (a .onnx file or its folder) with its manifest; None: the embedded default."""
        p = default_model_path() if path is None else Path(path)
        if p.is_dir():
            p = p / "model.onnx"
        if not p.is_file():
            raise ModelError(f"model file {p} does not exist")
        return cls(p, load_manifest(p), options)

    def _check_io(self) -> None:
        inputs = self._session.get_inputs()
        names = [i.name for i in inputs]
        if len(inputs) != 1 or inputs[0].name != self.manifest.input_name:
            raise ModelError(f"model inputs {names} do not match the manifest's {self.manifest.input_name!r}")
        shape = inputs[0].shape
        crop = self.manifest.preprocess.crop
        if list(shape[1:]) != [3, crop, crop]:
            raise ModelError(f"model input shape {shape} does not match a {crop}x{crop} RGB crop")
        if inputs[0].type != "tensor(float)":
            raise ModelError(f"model input type {inputs[0].type} is not tensor(float)")
        outputs = [o.name for o in self._session.get_outputs()]
        if self.manifest.output_name not in outputs:
            raise ModelError(f"model outputs {outputs} lack the manifest's {self.manifest.output_name!r}")

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c = self.manifest.preprocess.crop
        return (3, c, c)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits for an (N, 3, H, W) float32 batch."""
        out = self._session.run([self.manifest.output_name], {self.manifest.input_name: batch})
        return np.asarray(out[0]).reshape(batch.shape[0], -1)

    def warm_up(self, batch_size: int = 1) -> None:
        """One inference on zeros so that the first real input does not pay for lazy allocations."""
        self.run(np.zeros((batch_size, *self.input_shape), dtype=np.float32))

    def info(self) -> dict[str, object]:
        return {"path": str(self.path), "sha256": self.sha256, "precision": self.precision,
                "manifest": self.manifest.raw}
