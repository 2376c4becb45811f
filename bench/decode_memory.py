#!/usr/bin/env python3
"""Peak resident memory of decoding one image (``crop_pixels``), before and after the bounded decoder.

Each case is decoded in a fresh interpreter (tests/support/decode_memory.py): its peak RSS growth over
what the interpreter held after its imports. "before" is ``edge_infer/model/preprocess.py`` of ``--before``
(the commit before the band conversion), loaded from git; "after" is the working tree. "estimate" is what
the decoder now checks against ``pipeline.max_decode_mb`` before decoding.

    .venv/bin/python bench/decode_memory.py [--before 7daf4bb]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_infer.decoding.decode import apply_draft, decode_cost  # noqa: E402
from edge_infer.decoding.preprocess import PreprocessSpec  # noqa: E402
from tests.support.decode_memory import CASES, peak_growth, write_case  # noqa: E402


def _estimate_mb(path: Path) -> float:
    """The estimate as ``crop_pixels`` makes it: after the JPEG draft, before ``load()``."""
    from PIL import Image

    target = 2 * PreprocessSpec().resize
    with Image.open(path) as img:
        img.info["full_size"] = img.size
        apply_draft(img, target)
        return decode_cost(img, reduce_short=target, file_bytes=path.stat().st_size) / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="7daf4bb", help="the commit to compare with (default: %(default)s)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before = folder / "preprocess_before.py"
        before.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{args.before}:edge_infer/model/preprocess.py"],
                                         capture_output=True, text=True, check=True).stdout)
        print(f"peak RSS growth of crop_pixels, one fresh process per case; before = {args.before}, after = working tree")
        print(f"{'case':38s} {'file':>8s} {'before':>9s} {'after':>9s} {'estimate':>9s}  outcome")
        for name in CASES:
            path = write_case(name, folder)
            old, new = peak_growth(path, before), peak_growth(path)
            outcome = new["outcome"] if new["outcome"] == old["outcome"] else f"{old['outcome']} -> {new['outcome']}"
            print(f"{name:38s} {path.stat().st_size / 1024:6.0f} KB {old['growth_mb']:6.0f} MB {new['growth_mb']:6.0f} MB "
                  f"{_estimate_mb(path):6.0f} MB  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
