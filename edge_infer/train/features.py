"""Features from the deployed int8 backbone, streamed: one image decoded at a time, only its vectors
kept.

The embedded model is run by onnxruntime with two outputs exposed (``onnx_wire.edit``): the pooled
1280 features the stock classifier reads (quantized and dequantized, exactly as the deployed graph
computes them) and the stock 1000 ImageNet logits. Per image that is ~9 KB per view, so 2,000 photos
with 4 views hold ~73 MB; the decoded pixels are dropped as soon as their views are computed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..classifier.manifest import default_model_path
from ..decoding.preprocess import PreprocessSpec, crop_pixels, prepare
from ..errors import ExportError, InputError
from ..tools.progress import Progress
from . import onnx_wire
from .augment import view
from .dataset import square_spec

log = logging.getLogger(__name__)
STOCK_OUTPUT = "logits"


@dataclass
class Features:
    classes: list[str]
    files: list[Path] = field(default_factory=list)  # readable images, in class order
    labels: list[int] = field(default_factory=list)
    pooled: list[np.ndarray] = field(default_factory=list)  # (views, 1280) float32 per image
    stock: list[np.ndarray] = field(default_factory=list)  # (views, 1000) float32 per image
    skipped: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def arrays(self, index: list[int],
               views: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pooled, stock, labels) of the images ``index``, a row a view (``views``: first)."""
        v = slice(None) if views is None else slice(0, views)
        if not index:
            empty = np.zeros(0, np.int64)
            return np.zeros((0, 1280), np.float32), np.zeros((0, 1000), np.float32), empty
        f = np.concatenate([self.pooled[i][v] for i in index])
        s = np.concatenate([self.stock[i][v] for i in index])
        per = self.pooled[0][v].shape[0] if self.pooled else 1
        return f, s, np.repeat(np.array([self.labels[i] for i in index], dtype=np.int64), per)


def pooled_name(model: bytes) -> str:
    """The tensor the stock classifier (the node producing ``logits``) reads its features from."""
    for op, inputs, outputs in onnx_wire.node_outputs(model):
        if STOCK_OUTPUT in outputs and op in ("Gemm", "MatMul"):
            return inputs[0]
    raise ExportError(f"the embedded model has no Gemm/MatMul producing {STOCK_OUTPUT!r}")


def backbone() -> tuple[bytes, str]:
    """The embedded int8 model's bytes and the name of its pooled features."""
    model = default_model_path().read_bytes()
    return model, pooled_name(model)


def extract(classes: dict[str, list[Path]], views: int, seed: int, threads: int = 0) -> Features:
    model, pooled = backbone()
    both = onnx_wire.edit(model, [(pooled, 1280), (STOCK_OUTPUT, 1000)])
    session = session_from_bytes(both, threads)
    spec, out = PreprocessSpec(), Features(list(classes))
    square, rng = square_spec(spec), np.random.default_rng(seed)
    progress = Progress(range(sum(len(f) for f in classes.values())), "features")
    for k, (name, files) in enumerate(classes.items()):
        out.skipped[name] = []
        for f in files:
            try:
                # The centre view by the runtime's own ``prepare``: a square crop's centre is
                # resampled differently (measured: pooled features up to 0.47 apart, 3.8% of top-1
                # changed).
                first = prepare(f, spec).tensor
                pixels = crop_pixels(f, square).tensor if views > 1 else None
            except InputError as e:
                out.skipped[name].append((str(f), f"{e.kind}: {e.message}"))
                progress.advance()
                continue
            batch = np.stack([first] + [view(pixels, spec, rng) for _ in range(views - 1)])
            feats, logits = session.run(None, {"input": batch})
            out.files.append(f)
            out.labels.append(k)
            out.pooled.append(np.asarray(feats, np.float32))
            out.stock.append(np.asarray(logits, np.float32))
            progress.advance()
    progress.close()
    for name, skipped in out.skipped.items():  # after the bar, which a log line would cut in two
        for f, why in skipped:
            log.warning("class %s: skipping %s: %s", name, f, why)
    return out


def session_from_bytes(model: bytes, threads: int = 0):  # type: ignore[no-untyped-def]
    """An onnxruntime session of a model held in memory, silent below errors (no chatter)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
