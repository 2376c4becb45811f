"""Run inside the arm64 root by arm64-check.sh: one photo through a real decoder process (forkserver, fd
passing, the shared-memory crop, the sandbox), compared with decoding it in this process.

Under qemu-user some sandbox steps cannot take effect (qemu does not pass a guest's seccomp filter to the
host kernel): they are printed, not judged; the decode itself must work and give the same crop.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    import numpy as np

    from edge_infer.config import PipelineConfig
    from edge_infer.decoding.preprocess import PreprocessSpec, crop_pixels
    from edge_infer.decoding.processes import Decoded, build_decoders
    from edge_infer.pipeline.input_file import open_input
    from edge_infer.pipeline.tensor_pool import TensorPool

    photo = sys.argv[1]
    spec = PreprocessSpec()
    pool = TensorPool(1, (spec.crop, spec.crop, 3), np.uint8)
    decoder = build_decoders(PipelineConfig(decode_timeout_s=120.0), 1, spec, pool)[0]
    decoder.ensure_started()
    report = dict(decoder.report)  # before stop(), which forgets it
    fd, st = open_input(photo, 1 << 27)
    try:
        out = decoder.decode(fd, st.st_size, 0, 120.0)
    finally:
        os.close(fd)
        decoder.stop()
    steps = "; ".join(f"{name} {status}" + (f" ({detail})" if status != "applied" else "")
                      for name, (status, detail) in report.items()) or "no report"
    same = (isinstance(out, Decoded) and out.error is None
            and bool((pool.tensors[0] == crop_pixels(photo, spec).tensor).all()))
    print(f"arm64-check: decoder process: {'ok, the same crop as in-process' if same else out}; sandbox {steps}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
