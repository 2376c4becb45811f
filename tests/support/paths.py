"""Where the repository and ../shared (real weights, photos; EDGE_INFER_SHARED overrides) are."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGE_INFER_SHARED", ROOT.parent / "shared"))
SAMPLES = SHARED / "images" / "imagenet-samples"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_imagenet1k.pth"
LABEL_NAMES = SHARED / "labels" / "imagenet1k_labels.txt"
PEER = SHARED / "models" / "onnx-zoo-mobilenetv2-12-int8.onnx"
