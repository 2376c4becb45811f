#!/usr/bin/env python3
"""What loading the model costs in resident memory, and what onnxruntime's weight prepacking buys.

Prints the RSS added by creating the session (with and without prepacking), what trimming the heap
afterwards gives back, and the CPU per image of batch-4 inference on one thread for both.

    python bench/session_memory.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_infer.classifier.manifest import default_model_path  # noqa: E402
from edge_infer.ops.memory import heap_trimmer  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    import onnxruntime as ort

    trim = heap_trimmer()
    trim()
    sessions = {}
    for name, prepack in (("prepacked", True), ("not prepacked", False)):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not prepack:
            so.add_session_config_entry("session.disable_prepacking", "1")
        before = rss_mb()
        sessions[name] = ort.InferenceSession(str(default_model_path()), so, providers=["CPUExecutionProvider"])
        loaded = rss_mb()
        trim()
        print(f"session, {name}: +{loaded - before:.1f} MB, +{rss_mb() - before:.1f} MB after trimming the heap")
    x = np.random.default_rng(0).random((4, 3, 224, 224), dtype=np.float32)
    best = {name: float("inf") for name in sessions}
    for _ in range(5):  # interleaved bursts; the cheapest is the truest on a shared machine
        for name, s in sessions.items():
            c0, n = time.process_time(), 0
            while time.process_time() - c0 < 0.3:
                s.run(None, {s.get_inputs()[0].name: x})
                n += 4
            best[name] = min(best[name], 1000 * (time.process_time() - c0) / n)
    for name, ms in best.items():
        print(f"batch 4 on one thread, {name}: {ms:.2f} ms CPU per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
