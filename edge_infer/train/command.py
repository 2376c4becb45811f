"""``edge-infer train``: the runtime path, torch's with ``--train-layers`` or ``--weights``."""
from __future__ import annotations

import argparse
import os

from ..errors import ExportError
from .settings import FineTuneSettings


def _quiet_runtime() -> None:
    """onnxruntime's own log lines (warnings as it optimises a graph) are not the user's concern."""
    os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
    try:
        import onnxruntime as ort

        ort.set_default_logger_severity(3)
    except (ImportError, AttributeError):
        pass


def cmd_train(args: argparse.Namespace) -> int:
    torch_path = args.train_layers > 0 or args.weights is not None
    if args.views is None:
        args.views = FineTuneSettings().views if torch_path else 1
    if args.views < 1:
        raise ExportError(f"--views must be >= 1, got {args.views}")
    for name, value in (("--train-layers", args.train_layers), ("--epochs", args.epochs),
                        ("--tail-epochs", args.tail_epochs), ("--folds", args.folds)):
        if value < 0:
            raise ExportError(f"{name} must be >= 0, got {value}")
    if args.folds == 1:
        raise ExportError("--folds must be 0 (none) or at least 2")
    _quiet_runtime()
    if not torch_path:
        from .runtime import RuntimeOptions, run_runtime_training

        report = run_runtime_training(RuntimeOptions(
            data=args.data, out=args.out, seed=args.seed, held_out=args.held_out, views=args.views,
            folds=args.folds, threads=args.threads, min_agreement=args.min_agreement))
        print(report.text())
        print(f"wrote {report.out}/model.onnx, selftest/ (model.json beside)")
        return 0
    return _torch_train(args)


def _torch_train(args: argparse.Namespace) -> int:
    if args.weights is None:
        raise ExportError("--train-layers needs --weights (the ImageNet MobileNetV2 state dict, or "
                          "'torchvision')")
    try:
        from .run import TrainOptions, run_training
    except ImportError as e:
        raise ExportError("train --train-layers/--weights needs the 'export' extra "
                          f"(pip install 'edge-infer[export]'): {e}") from e
    finetune = FineTuneSettings(views=args.views, train_layers=args.train_layers,
                                tail_epochs=args.tail_epochs, head_epochs=args.epochs,
                                seed=args.seed, threads=args.threads)
    opts = TrainOptions(data=args.data, out=args.out, weights=args.weights,
                        width_mult=args.width_mult, seed=args.seed, held_out=args.held_out,
                        finetune=finetune, min_agreement=args.min_agreement)
    report = run_training(opts)
    print(report.text())
    print(f"wrote {report.out}/model.onnx, fp32/, selftest/ (each model with model.json)")
    return 0
