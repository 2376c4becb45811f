"""The schema of what processes an input: the model, batching and the preprocessing pipeline."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..config_reader import setting

# pipeline.formats picks from these
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")

# Each field is declared once, with setting(default, doc, rule), and read() reads every field by it.
# Optional fields are written Optional[...], not "X | None": read() resolves the annotations with
# get_type_hints, which cannot evaluate "X | None" on Python 3.9.


@dataclass(frozen=True)
class ModelConfig:
    """The ONNX model."""
    path: Optional[Path] = setting(
        None, "a .onnx model with model.json beside it; None: the embedded one")
    store: Optional[Path] = setting(
        None, "the folder of model versions edge-infer models keeps, deploys and rolls back (a "
              "store-managed device sets path to <store>/current/model.onnx); None: models/ "
              "beside output.dir")
    top_k: int = setting(5, "predictions per result", ge=1, le=1000)
    threads: int = setting(0, "onnxruntime intra-op threads per batch; 0: the cores shared out "
                              "among the batches run at once (see PipelineConfig)", ge=0, le=64)


@dataclass(frozen=True)
class BatchConfig:
    # Measured on two cores (edge-infer bench --daemon batch=2 --daemon batch=3 --daemon
    # batch=4 ...): each image of batch capacity costs about 4 MB of onnxruntime activations per
    # inference thread. With two inference threads, 2 keeps the daemon near 113 MB; 3 and 4 reach
    # 118-124 MB (over the 120 MB budget) for 0-4% more throughput.
    max_size: int = setting(2, "images per inference", ge=1, le=256)
    max_wait_ms: float = setting(10.0, "how long the batcher waits for more images after the first",
                                 ge=0, le=10000)


@dataclass(frozen=True)
class PipelineConfig:
    """``workers=0`` is one per CPU core, each with its decoder: decoding large photos needs every
    core. ``inference_threads`` batches run at once, each on its own thread, sharing one model; 0 is
    two on two or more cores. Two single-threaded runs keep both cores of a two-core machine busy
    where one run on two threads leaves them waiting for each other at every layer (measured 78-90%
    of the machine's limit with one, 89-96% with two: see README, End to end); each costs its own
    activations (4 MB per image of ``batch.max_size``).
    """
    queue_size: int = setting(64, "bound of the job queue (backpressure)", ge=1, le=100_000)
    workers: int = setting(0, "preprocessing threads; 0: one per core", ge=0, le=64)
    inference_threads: int = setting(0, "batches run at once; 0: two on two or more cores",
                                     ge=0, le=16)
    max_pixels: int = setting(50_000_000, "larger images fail as too_large before they are decoded",
                              ge=1)
    max_file_bytes: int = setting(
        104_857_600, "larger files fail as too_large before they are read", ge=1)
    decoders: Literal["process", "thread"] = setting(
        "process", "decoding in sandboxed processes, or in threads")
    decode_timeout_s: float = setting(
        15.0, "a decode taking longer fails as timeout; its process is replaced", gt=0, le=3600)
    # decoding/decode.py's defaults (which it explains), repeated so that reading a config never
    # imports Pillow (the CLI starts without it); test_config checks that they agree.
    max_decode_mb: int = setting(
        256, "images needing more to decode fail as too_large, from the header", ge=1)
    formats: tuple[str, ...] = setting(IMAGE_FORMATS, "the image formats decoded; anything else is "
                                                      "unsupported", choices=IMAGE_FORMATS)
