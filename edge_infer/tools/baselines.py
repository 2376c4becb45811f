"""The baselines the daemon is measured against, on the same photos and model: the naive serial loop (what a
user writes first), ``classify``, and the machine's own limits from the model and the preprocessing alone
(the throughput ceiling, and the light load's latency bound back to back and at the daemon's pace).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..classifier.manifest import Manifest, load_manifest
from ..classifier.session import make_ort_session
from .bench_run import Run


def _naive_pixels(f: Path, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    from PIL import Image

    img = Image.open(f).convert("RGB")
    w, h = img.size
    s = 256 / min(w, h)
    img = img.resize((max(256, int(w * s)), max(256, int(h * s))), Image.BILINEAR)
    left, top = (img.width - 224) // 2, (img.height - 224) // 2
    x = (np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32) / 255 - mean) / std
    return x.transpose(2, 0, 1)[None]


def naive_loop(files: list[Path], out_dir: Path, model: Path) -> Run:
    """The floor: one file at a time, everything in Python on the caller's thread."""
    m = load_manifest(model)
    session = make_ort_session(model)
    mean, std = np.array(m.preprocess.mean, np.float32), np.array(m.preprocess.std, np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    c0, t0 = time.process_time(), time.perf_counter()
    for f in files:
        logits = session.run(None, {m.input_name: _naive_pixels(f, mean, std)})[0][0]
        with open(out_dir / f"{f.name}.json", "w") as fp:
            json.dump({"input": f.name, "top1": int(np.argmax(logits))}, fp)
    return Run("naive loop", len(files), time.perf_counter() - t0, time.process_time() - c0)


@dataclass
class Limit:
    """The machine's ceiling: N cores can do at most N / (preprocess + inference CPU) images a second."""

    preprocess_ms: float  # the naive loop's preprocessing, CPU per image
    inference_ms: float  # one inference, batch 1, one thread, CPU per image
    latency_ms: float  # one inference, batch 1, default threads, wall clock (best)
    cores: int

    @property
    def images_per_second(self) -> float:
        return 1000.0 * self.cores / (self.preprocess_ms + self.inference_ms)


def _naive_inputs(files: list[Path], m: Manifest) -> list[np.ndarray]:
    """The naive loop's input tensor for each file."""
    mean, std = np.array(m.preprocess.mean, np.float32), np.array(m.preprocess.std, np.float32)
    return [_naive_pixels(f, mean, std) for f in files]


def machine_limit(files: list[Path], model: Path) -> Limit:
    from ..classifier.session import SessionOptions

    m = load_manifest(model)
    c0 = time.process_time()
    inputs = _naive_inputs(files, m)
    pre = (time.process_time() - c0) / len(files)
    one = make_ort_session(model, SessionOptions(intra_op_threads=1))
    default = make_ort_session(model)
    for s in (one, default):
        s.run(None, {m.input_name: inputs[0]})
    c0 = time.process_time()
    for x in inputs:
        one.run(None, {m.input_name: x})
    inf = (time.process_time() - c0) / len(inputs)
    best = float("inf")
    for x in inputs:
        t0 = time.perf_counter()
        default.run(None, {m.input_name: x})
        best = min(best, time.perf_counter() - t0)
    return Limit(1000 * pre, 1000 * inf, 1000 * best, os.cpu_count() or 1)


def classify_run(files: list[Path], model: Path) -> Run:
    from ..classifier.session import ModelSession
    from .classify import classify

    session = ModelSession.load(model)
    c0, t0 = time.process_time(), time.perf_counter()
    classify([str(f) for f in files], session, 5, lambda obj: json.dumps(obj))
    return Run("classify", len(files), time.perf_counter() - t0, time.process_time() - c0)


def preprocess_ms(files: list[Path], model: Path, pause_s: float = 0.0) -> float:
    """Median wall time of the daemon's own preprocessing of these photos (crop, then normalise), back to
    back, or with ``pause_s`` before each (the light load's pace)."""
    from ..decoding.preprocess import crop_pixels, normalise

    spec = load_manifest(model).preprocess
    times = []
    for f in files:
        time.sleep(pause_s)
        t0 = time.perf_counter()
        normalise(crop_pixels(f, spec).tensor, spec)
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def paced_latency_ms(files: list[Path], model: Path, pause_s: float) -> float:
    """Median batch-1 inference latency (default threads) with ``pause_s`` idle before each run: what the
    model alone takes at the light load's pace, when the caches have gone cold since the last photo."""
    m = load_manifest(model)
    session = make_ort_session(model)
    inputs = _naive_inputs(files, m)
    session.run(None, {m.input_name: inputs[0]})
    times = []
    for x in inputs:
        time.sleep(pause_s)
        t0 = time.perf_counter()
        session.run(None, {m.input_name: x})
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))
