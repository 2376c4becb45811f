#!/usr/bin/env python3
"""What decoding costs in a decoder process against in a thread, one photo at a time, back to back: CPU of
this process's whole tree (the decoder and its forkserver included) and wall time per photo, twice each,
interleaved.

    python bench/decoder_overhead.py build/images/jpeg12mp
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from edge_infer.config import PipelineConfig
    from edge_infer.decoding.preprocess import PreprocessSpec, is_image_name
    from edge_infer.decoding.processes import build_decoders
    from edge_infer.pipeline.input_file import open_input
    from edge_infer.pipeline.tensor_pool import TensorPool
    from edge_infer.tools.procfs import tree_cpu_seconds

    files = sorted(p for p in Path(sys.argv[1]).iterdir() if is_image_name(p.name))
    spec = PreprocessSpec()
    pool = TensorPool(1, (spec.crop, spec.crop, 3), np.uint8)
    for mode in ("thread", "process", "thread", "process"):
        decoder = build_decoders(PipelineConfig(decoders=mode), 1, spec, pool)[0]
        decoder.ensure_started()
        c0, t0 = tree_cpu_seconds(os.getpid()), time.perf_counter()
        for f in files:
            fd, st = open_input(f, 1 << 27)
            try:
                decoder.decode(fd, st.st_size, 0, 60.0)
            finally:
                os.close(fd)
        cpu, wall = tree_cpu_seconds(os.getpid()) - c0, time.perf_counter() - t0
        print(f"{mode:8s} CPU {1000 * cpu / len(files):6.2f} ms/photo, wall {1000 * wall / len(files):6.2f} ms/photo")
        decoder.stop()


if __name__ == "__main__":
    main()
