"""Making a model: ``export`` (torch weights to a verified int8 model) and ``train`` (fine-tune)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..train.settings import FineTuneSettings


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    _add_export(sub)
    _add_train(sub)


def _add_export(sub: argparse._SubParsersAction[Any]) -> None:
    s = sub.add_parser(
        "export", help="torch weights -> ONNX fp32 -> calibrated int8 -> verified, with manifest")
    s.add_argument("--weights", required=True,
                   help="a MobileNetV2 state dict file (torchvision key names), or 'torchvision' "
                        "to download")
    s.add_argument("--images", required=True, type=Path,
                   help="folder of sample images for calibration and verification")
    s.add_argument("--out", required=True, type=Path,
                   help="output folder: model.onnx + model.json, fp32/ beside")
    s.add_argument("--labels-csv", type=Path,
                   help="file,class_index CSV: report top-1 accuracy of both models")
    s.add_argument("--class-names", type=Path,
                   help="class names, one a line (default: the embedded model's)")
    s.add_argument("--width-mult", type=float, default=1.0,
                   help="MobileNetV2 width multiplier, 0.35 to 1.4")
    s.add_argument("--opset", type=int, default=17)
    s.add_argument("--calib-every", type=int, default=4,
                   help="every N-th image calibrates, the rest verify (default 4)")
    s.add_argument("--min-agreement", type=float, default=0.90,
                   help="fail when int8 top-1 agrees with fp32 on fewer images than this "
                        "(default 0.90)")
    s.add_argument("--calibration", choices=("minmax", "entropy", "percentile"),
                   default="percentile",
                   help="activation range calibration (default percentile, of --percentile)")
    s.add_argument("--percentile", type=float, default=99.99)
    s.add_argument("--torchscript", type=Path, help="also write a traced fp32 TorchScript file")
    s.add_argument("--ops-yaml", type=Path,
                   help="also write the TorchScript model's root operators (YAML)")
    s.add_argument("--no-bench", action="store_true", help="skip the latency comparison")


def _add_train(sub: argparse._SubParsersAction[Any]) -> None:
    ft = FineTuneSettings()  # train's defaults, declared once there
    s = sub.add_parser(
        "train", help="a folder per class -> a new int8 model of your classes, self-tested",
        description="By default with the runtime alone (no torch): features from the embedded int8 "
                    "MobileNetV2, a new head fitted in numpy on them and appended to that int8 "
                    "graph, verified on a held-out stratified split; OUT/model.onnx + model.json, "
                    "OUT/selftest/, OUT/confusion.png. DIR holds one sub-folder of images per "
                    "class, or is a camera's samples_dir (<region>/<state>/: the states are the "
                    "classes). --weights or --train-layers N fine-tune with torch instead (the "
                    "'export' extra) and calibrate a new int8 model.",
        epilog="exit status: 0 ok; 3 verification failed (int8 agrees with fp32, or the served "
               "graph with the trained head, on fewer held-out images than --min-agreement); 1 any "
               "other error (bad --data, unwritable --out, bad weights)")
    s.add_argument("--data", required=True, type=Path,
                   help="one sub-folder per class; class names = sorted folder names")
    s.add_argument("--out", required=True, type=Path,
                   help="output folder: model.onnx + model.json, fp32/, selftest/")
    s.add_argument("--weights",
                   help="torch path: the ImageNet MobileNetV2 state dict to start from, or "
                        "'torchvision' to download (default: none, the runtime path)")
    s.add_argument("--width-mult", type=float, default=1.0,
                   help="MobileNetV2 width multiplier of --weights")
    s.add_argument("--seed", type=int, default=0,
                   help="seeds the split, the augmentation and training (default 0)")
    s.add_argument("--held-out", type=float, default=0.25,
                   help="fraction of each class held out for verification (default 0.25, at least "
                        "one image)")
    s.add_argument("--views", type=int,
                   help="views per training image: centre crop + random crops/flips (default 1 "
                        f"on the runtime path, where crops measured worse; {ft.views} with torch)")
    s.add_argument("--train-layers", type=int, default=ft.train_layers,
                   help="trained layers at the end of the network besides the classifier "
                        f"(default {ft.train_layers}; 0: the classifier only)")
    s.add_argument("--epochs", type=int, default=ft.head_epochs,
                   help=f"epochs of training the classifier (default {ft.head_epochs})")
    s.add_argument("--tail-epochs", type=int, default=ft.tail_epochs,
                   help="then epochs of training --train-layers with it "
                        f"(default {ft.tail_epochs})")
    s.add_argument("--folds", type=int, default=0,
                   help="also cross-validate in K stratified folds (every image held out once): "
                        "steadier figures on a small set (default 0: none)")
    s.add_argument("--threads", type=int, default=0,
                   help="onnxruntime / torch threads (0: one per core)")
    s.add_argument("--min-agreement", type=float, default=0.90,
                   help="fail (exit 3) when int8 top-1 agrees with fp32 (torch path), or the "
                        "served graph with the trained head, on fewer held-out images "
                        "(default 0.90)")
