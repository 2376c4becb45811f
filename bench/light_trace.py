#!/usr/bin/env python3
"""Where a lone photo's latency goes at light load: one photo every 100 ms into an in-process daemon, each
stage stamped (rename -> worker start/end -> inference start/end -> write start/end), medians printed; then
batch-1 inference back to back against after 100 ms idle.

    python bench/light_trace.py --photos ../shared/images/imagenet-samples
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edge_infer.pipeline.inference as inference  # noqa: E402
import edge_infer.pipeline.workers as workers  # noqa: E402
import edge_infer.commit.writer as writer  # noqa: E402
from edge_infer.classifier.manifest import default_model_path  # noqa: E402
from edge_infer.classifier.session import SessionOptions, make_ort_session  # noqa: E402
from edge_infer.config import BatchConfig, load_config  # noqa: E402
from edge_infer.pipeline.plan import plan_threads  # noqa: E402
from tests.support.daemon import RunningApp, wait_for, write_config  # noqa: E402

STAMPS: dict[str, dict[str, float]] = {}


def stamped(cls: type, name: str, before: str, after: str) -> None:
    """Wrap ``cls.name`` so that every job it handles gets a time stamp before and after."""
    original = getattr(cls, name)

    def wrapper(self, arg):  # type: ignore[no-untyped-def]
        jobs = arg if isinstance(arg, list) else [arg]
        for j in jobs:
            STAMPS.setdefault(j.rel, {})[before] = time.perf_counter()
        original(self, arg)
        for j in jobs:
            STAMPS[j.rel][after] = time.perf_counter()
    setattr(cls, name, wrapper)


def cold_and_hot_inference_ms(threads: int, runs: int = 30) -> tuple[float, float]:
    session = make_ort_session(default_model_path(), SessionOptions(intra_op_threads=threads))
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    for _ in range(20):
        session.run(None, {"input": x})
    hot, cold = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        hot.append(time.perf_counter() - t0)
    for _ in range(runs):
        time.sleep(0.1)
        t0 = time.perf_counter()
        session.run(None, {"input": x})
        cold.append(time.perf_counter() - t0)
    return 1000 * float(np.median(hot)), 1000 * float(np.median(cold))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--count", type=int, default=30)
    args = ap.parse_args()
    stamped(workers.PreprocessWorker, "process", "prep_start", "prep_end")
    stamped(inference.InferenceStage, "_infer", "infer_start", "infer_end")
    stamped(writer.ResultWriter, "commit", "write_start", "write_end")
    files = sorted(args.photos.glob("*.JPEG"))[:args.count]
    arrived: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "inbox").mkdir()
        (work / "stage").mkdir()
        for f in files:
            shutil.copy(f, work / "stage" / f.name)
        cfg = write_config(work, sources=[{"name": "drops", "type": "folder", "path": "inbox", "after": "delete",
                                           "failed_dir": "failed"}],  # the daemon's defaults
                           batch={"max_size": BatchConfig.max_size, "max_wait_ms": BatchConfig.max_wait_ms},
                           pipeline={"workers": 0})
        threads = plan_threads(load_config(cfg), os.cpu_count() or 1).intra_op
        with RunningApp(cfg):
            for f in files:
                time.sleep(0.1)
                arrived[f.name] = time.perf_counter()
                os.rename(work / "stage" / f.name, work / "inbox" / f.name)
            wait_for(lambda: all("write_end" in STAMPS.get(f.name, {}) for f in files), 60, "every result")
    keys = ["prep_start", "prep_end", "infer_start", "infer_end", "write_start", "write_end"]
    med = np.median([[1000 * (STAMPS[f.name][k] - arrived[f.name]) for k in keys] for f in files], axis=0)
    print("median ms since the rename: " + ", ".join(f"{k} {v:.1f}" for k, v in zip(keys, med)))
    hot, cold = cold_and_hot_inference_ms(threads)
    print(f"batch-1 inference on {threads} thread(s), as in the daemon: {hot:.2f} ms back to back, {cold:.2f} ms "
          "after 100 ms idle (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
