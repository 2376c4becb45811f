"""The one-shot tools: ``info``, ``classify`` and ``bench``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

MODEL_HELP = "a .onnx model (with model.json beside it); default: the embedded model"


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _named_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def add_info_classify(sub: argparse._SubParsersAction[Any]) -> None:
    s = sub.add_parser("info", help="the model and runtime, as one JSON object")
    s.add_argument("--model", help=MODEL_HELP)

    s = sub.add_parser("classify",
                       help="classify files and folders; one JSON object per line on stdout")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--model", help=MODEL_HELP)
    s.add_argument("--top-k", type=int, default=5, help="predictions per image (default 5)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--threads", type=int, default=0,
                   help="onnxruntime intra-op threads (0: one per core)")


def add_bench(sub: argparse._SubParsersAction[Any]) -> None:
    s = sub.add_parser("bench", help="throughput and latency: end to end (default) or --model-only")
    s.add_argument("--model-only", action="store_true", help="time the models alone, side by side")
    s.add_argument("--model", dest="models", action="append", type=_named_path, default=[],
                   metavar="NAME=PATH",
                   help="a model to compare (repeatable); default: int8=the embedded model")
    s.add_argument("--images", type=Path,
                   help="prepare inputs from these images (default: random pixels)")
    s.add_argument("--batch", type=_csv_ints, default=(1, 8), help="batch sizes, e.g. 1,8")
    s.add_argument("--threads", type=_csv_ints, default=(1, 2),
                   help="intra-op thread counts, e.g. 1,2")
    s.add_argument("--rounds", type=int, default=None,
                   help="interleaved bursts per model and setting (default 15), or end-to-end "
                        "rounds (default 3)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--daemon", dest="daemons", action="append", default=[], metavar="SETTINGS",
                   help="end to end: daemon settings to compare, e.g. "
                        "batch=8,wait=10,threads=1,workers=2,lanes=2 (repeatable: a sweep, "
                        "interleaved round by round; default: the daemon's defaults)")
    s.add_argument("--idle-seconds", type=float, default=60.0,
                   help="end to end: how long the idle daemons' CPU is measured before the rounds "
                        "(default 60)")
