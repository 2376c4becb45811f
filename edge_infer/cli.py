"""Command line: argument parsing, and the only place that maps errors to exit codes and prints.

Longer than 300 lines: it declares every command's arguments and help, which the user reads as one
``--help``; each command's body is a few lines of wiring into its package.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import ConfigError, EdgeInferError, ExportError, InvalidConfig, ModelError, VerificationError
from .train.settings import FineTuneSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; the systemd unit does not restart on it
EXIT_VERIFY = 3

log = logging.getLogger("edge_infer")


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-infer", description="int8 MobileNetV2 image classification for edge devices")
    p.add_argument("--version", action="version", version=f"edge-infer {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("run", help="the daemon, in the foreground (systemd Type=notify)")
    s.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")

    s = sub.add_parser("check-config", help="validate a config; print every problem with its key path")
    s.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")
    s.add_argument("--unit", type=Path, help="check the shutdown deadline against this unit file's TimeoutStopSec "
                                             "(default: the installed edge-infer.service, if any)")

    s = sub.add_parser("status", help="the running daemon at a glance, read from its HTTP endpoints")
    s.add_argument("--url", help="the daemon's HTTP endpoint (default: from -c CONFIG's metrics.host/port, "
                                 "else http://127.0.0.1:9464)")
    s.add_argument("-c", "--config", type=Path, help="the daemon's YAML config, to find its metrics port")
    s.add_argument("--interval", type=float, default=1.0,
                   help="seconds between the two scrapes that give rates (default 1; 0: one scrape, no rates)")

    s = sub.add_parser("info", help="the model and runtime, as one JSON object")
    s.add_argument("--model", help="a .onnx model (with model.json beside it); default: the embedded model")

    s = sub.add_parser("classify", help="classify files and folders; one JSON object per line on stdout")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--model", help="a .onnx model (with model.json beside it); default: the embedded model")
    s.add_argument("--top-k", type=int, default=5, help="predictions per image (default 5)")
    s.add_argument("--batch-size", type=int, default=8)
    s.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")

    s = sub.add_parser("export", help="torch weights -> ONNX fp32 -> calibrated int8 -> verified, with manifest")
    s.add_argument("--weights", required=True,
                   help="a MobileNetV2 state dict file (torchvision key names), or 'torchvision' to download")
    s.add_argument("--images", required=True, type=Path, help="folder of sample images for calibration and verification")
    s.add_argument("--out", required=True, type=Path, help="output folder: model.onnx + model.json, fp32/ beside")
    s.add_argument("--labels-csv", type=Path, help="file,class_index CSV: report top-1 accuracy of both models")
    s.add_argument("--class-names", type=Path, help="class names, one a line (default: the embedded model's)")
    s.add_argument("--width-mult", type=float, default=1.0, help="MobileNetV2 width multiplier, 0.35 to 1.4")
    s.add_argument("--opset", type=int, default=17)
    s.add_argument("--calib-every", type=int, default=4, help="every N-th image calibrates, the rest verify (default 4)")
    s.add_argument("--min-agreement", type=float, default=0.90,
                   help="fail when int8 top-1 agrees with fp32 on fewer images than this (default 0.90)")
    s.add_argument("--calibration", choices=("minmax", "entropy", "percentile"), default="percentile",
                   help="activation range calibration (default percentile, of --percentile)")
    s.add_argument("--percentile", type=float, default=99.99)
    s.add_argument("--torchscript", type=Path, help="also write a traced fp32 TorchScript file")
    s.add_argument("--ops-yaml", type=Path, help="also write the TorchScript model's root operators (YAML)")
    s.add_argument("--no-bench", action="store_true", help="skip the latency comparison")

    ft = FineTuneSettings()  # train's defaults, declared once there
    s = sub.add_parser("train", help="fine-tune on a folder per class -> verified int8 model, like export",
                       description="Fine-tune the ImageNet-pretrained MobileNetV2 on DIR (one sub-folder of images "
                                   "per class), hold out a stratified split, then export: ONNX fp32, calibrated int8 "
                                   "verified on the held-out images, manifests, OUT/selftest/ and OUT/confusion.png.",
                       epilog="exit status: 0 ok; 3 verification failed (int8 agrees with fp32 on fewer held-out "
                              "images than --min-agreement); 1 any other error (bad --data, unwritable --out, "
                              "bad weights)")
    s.add_argument("--data", required=True, type=Path, help="one sub-folder per class; class names = sorted folder names")
    s.add_argument("--out", required=True, type=Path, help="output folder: model.onnx + model.json, fp32/, selftest/")
    s.add_argument("--weights", required=True,
                   help="the ImageNet MobileNetV2 state dict to start from, or 'torchvision' to download")
    s.add_argument("--width-mult", type=float, default=1.0, help="MobileNetV2 width multiplier of --weights")
    s.add_argument("--seed", type=int, default=0, help="seeds the split, the augmentation and training (default 0)")
    s.add_argument("--held-out", type=float, default=0.25,
                   help="fraction of each class held out for verification (default 0.25, at least one image)")
    s.add_argument("--views", type=int, default=ft.views,
                   help=f"views per training image: centre crop + random crops/flips (default {ft.views})")
    s.add_argument("--train-layers", type=int, default=ft.train_layers,
                   help="trained layers at the end of the network besides the classifier "
                        f"(default {ft.train_layers}; 0: the classifier only)")
    s.add_argument("--epochs", type=int, default=ft.head_epochs,
                   help=f"epochs of training the classifier (default {ft.head_epochs})")
    s.add_argument("--tail-epochs", type=int, default=ft.tail_epochs,
                   help=f"then epochs of training --train-layers with it (default {ft.tail_epochs})")
    s.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core)")
    s.add_argument("--min-agreement", type=float, default=0.90,
                   help="fail (exit 3) when int8 top-1 agrees with fp32 on fewer held-out images (default 0.90)")

    s = sub.add_parser("bench", help="throughput and latency: end to end (default) or --model-only")
    s.add_argument("--model-only", action="store_true", help="time the models alone, side by side")
    s.add_argument("--model", dest="models", action="append", type=_named_path, default=[], metavar="NAME=PATH",
                   help="a model to compare (repeatable); default: int8=the embedded model")
    s.add_argument("--images", type=Path, help="prepare inputs from these images (default: random pixels)")
    s.add_argument("--batch", type=_csv_ints, default=(1, 8), help="batch sizes, e.g. 1,8")
    s.add_argument("--threads", type=_csv_ints, default=(1, 2), help="intra-op thread counts, e.g. 1,2")
    s.add_argument("--rounds", type=int, default=None,
                   help="interleaved bursts per model and setting (default 15), or end-to-end rounds (default 3)")
    s.add_argument("--json", action="store_true", help="print JSON instead of a table")
    s.add_argument("--daemon", dest="daemons", action="append", default=[], metavar="SETTINGS",
                   help="end to end: daemon settings to compare, e.g. batch=8,wait=10,threads=1,workers=2,lanes=2 "
                        "(repeatable: a sweep, interleaved round by round; default: the daemon's defaults)")
    s.add_argument("--idle-seconds", type=float, default=60.0,
                   help="end to end: how long the idle daemons' CPU is measured before the rounds (default 60)")
    return p


# Most specific first: what each expected error prints and the exit status it maps to.
_ERRORS: tuple[tuple[type[Exception], str, int], ...] = (
    (InvalidConfig, "invalid config ", EXIT_CONFIG),
    (ConfigError, "config error: ", EXIT_CONFIG),
    (VerificationError, "verification failed: ", EXIT_VERIFY),
    (EdgeInferError, "", EXIT_FAILED),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO if args.command in ("export", "train", "run") else logging.WARNING
    # The daemon logs to stderr for journald, which stamps each line itself.
    fmt = "%(levelname)s %(name)s: %(message)s" if args.command == "run" else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    commands = {"run": cmd_run, "check-config": cmd_check_config, "status": cmd_status, "info": cmd_info,
                "classify": cmd_classify, "export": cmd_export, "train": cmd_train, "bench": cmd_bench}
    try:
        return commands[args.command](args)
    except EdgeInferError as e:
        prefix, code = next((p, c) for t, p, c in _ERRORS if isinstance(e, t))
        print(f"edge-infer: {prefix}{e}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("edge-infer: interrupted", file=sys.stderr)
        return 130


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import load_config
    from .ops.preflight import check_supported

    from .classifier.manifest import default_model_path, load_manifest

    config = load_config(args.config)
    check_supported(config)
    model = config.model.path or default_model_path()
    try:  # the model and its manifest must at least be there and readable (the sha256 is checked at start)
        if not model.is_file():
            raise ModelError(f"model file {model} does not exist")
        load_manifest(model)
    except ModelError as e:
        raise ConfigError("model.path", str(e)) from e
    from .ops.systemd import check_stop_timeout

    check_stop_timeout(config.shutdown.drain_timeout_s, args.unit)
    print(f"{args.config}: ok ({len(config.sources)} source(s), model {model})")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    import faulthandler
    import os

    from .app import App
    from .config import load_config
    from .lifecycle import ShutdownFlags, capture_signals
    from .ops.faults import Faults
    from .ops.systemd import Notifier

    # A fatal signal in the daemon's own process (SIGSEGV in a C library, SIGABRT) writes every thread's
    # Python stack to stderr, which is the journal: the crash names where it happened, not just status=11.
    faulthandler.enable()
    config = load_config(args.config)
    if not args.verbose:
        logging.getLogger().setLevel(config.logging.level.upper())
    app = App(config, Notifier.from_environ(os.environ), faults=Faults.from_environ(os.environ))
    flags = ShutdownFlags()
    with capture_signals(flags):
        try:
            clean = app.serve(flags)
        except ModelError as e:
            # A missing, corrupt or mismatched model is not cured by a restart: exit 78, which the unit
            # does not restart (RestartPreventExitStatus=78), naming the key that points at it.
            raise ConfigError("model.path", str(e)) from e
        except OSError as e:
            raise EdgeInferError(f"cannot start: {e}") from e
    if not clean:  # the daemon's last log line names the stages it gave up on
        print(f"edge-infer: stopped uncleanly, abandoning {', '.join(app.abandoned)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from .ops.status import DEFAULT_URL, status, url_for

    if args.interval < 0:
        raise ConfigError("--interval", "must be >= 0")
    url = args.url
    if url is None and args.config is not None:
        from .config import load_config

        metrics = load_config(args.config).metrics
        url = url_for(metrics.host, metrics.port)
    text, healthy = status(url or DEFAULT_URL, args.interval)
    sys.stdout.write(text)
    return EXIT_OK if healthy else EXIT_FAILED


def cmd_info(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from .classifier.session import ModelSession

    session = ModelSession.load(args.model)
    _print_json({"version": __version__, "model": session.info(),
                 "onnxruntime": {"version": ort.__version__, "providers": ort.get_available_providers()}})
    return EXIT_OK


def cmd_classify(args: argparse.Namespace) -> int:
    from .classifier.session import ModelSession, SessionOptions
    from .tools.classify import classify, expand
    from .tools.progress import Progress

    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError("--top-k" if args.top_k < 1 else "--batch-size", "must be >= 1")
    session = ModelSession.load(args.model, SessionOptions(intra_op_threads=args.threads))
    progress = Progress([], "classify", total=sum(1 for _ in expand(args.paths)))

    def emit(obj: dict[str, Any]) -> None:
        _print_json(obj)
        sys.stdout.flush()

    _, failed = classify(args.paths, session, args.top_k, emit, batch_size=args.batch_size, on_item=progress.advance)
    progress.close()
    return EXIT_FAILED if failed else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from .export.quantize import QuantSettings
        from .export.steps import ExportOptions, run_export
    except ImportError as e:
        raise ExportError(f"export needs the 'export' extra (pip install 'edge-infer[export]'): {e}") from e

    opts = ExportOptions(
        weights=args.weights, images=args.images, out=args.out, labels_csv=args.labels_csv,
        class_names=args.class_names, width_mult=args.width_mult, opset=args.opset,
        calib_every=args.calib_every, min_agreement=args.min_agreement,
        quant=QuantSettings(calibration=args.calibration, percentile=args.percentile), torchscript=args.torchscript,
        ops_yaml=args.ops_yaml, bench=not args.no_bench)
    report = run_export(opts)
    print(report.table())
    print(f"wrote {report.int8_path} and {report.fp32_path} (each with model.json)")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    try:
        from .train.run import TrainOptions, run_training
    except ImportError as e:
        raise ExportError(f"train needs the 'export' extra (pip install 'edge-infer[export]'): {e}") from e

    if args.views < 1:
        raise ExportError(f"--views must be >= 1, got {args.views}")
    for name, value in (("--train-layers", args.train_layers), ("--epochs", args.epochs),
                        ("--tail-epochs", args.tail_epochs)):
        if value < 0:
            raise ExportError(f"{name} must be >= 0, got {value}")
    finetune = FineTuneSettings(views=args.views, train_layers=args.train_layers, tail_epochs=args.tail_epochs,
                                head_epochs=args.epochs, seed=args.seed, threads=args.threads)
    opts = TrainOptions(data=args.data, out=args.out, weights=args.weights, width_mult=args.width_mult,
                        seed=args.seed, held_out=args.held_out, finetune=finetune, min_agreement=args.min_agreement)
    report = run_training(opts)
    print(report.text())
    print(f"wrote {report.out}/model.onnx, fp32/, selftest/ (each model with model.json)")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    import numpy as np

    from .classifier.manifest import default_model_path
    from .decoding.preprocess import PreprocessSpec
    from .tools.bench_model import format_table, model_only

    if not args.model_only:
        from .tools.bench_e2e import end_to_end

        if args.images is None:
            raise ConfigError("--images", "the end-to-end benchmark needs a folder of images")
        from .tools.bench_daemon import DaemonSettings

        model = Path(args.models[0][1]) if args.models else None
        try:
            daemons = tuple(DaemonSettings.parse(d) for d in args.daemons) or (DaemonSettings(),)
        except ValueError as e:
            raise ConfigError("--daemon", str(e)) from e
        print(end_to_end(args.images, rounds=args.rounds or 3, model=model, daemons=daemons, idle_s=args.idle_seconds))
        return EXIT_OK
    models = {name: Path(path) for name, path in args.models} or {"int8": default_model_path()}
    for name, path in models.items():
        if not path.is_file():
            raise ModelError(f"--model {name}={path}: no such file")
    spec = PreprocessSpec()
    if args.images:
        from .export.images import list_images, load_images

        inputs = load_images(list_images(args.images)[:16], spec, "preparing inputs").tensors
    else:
        inputs = np.random.default_rng(0).standard_normal((16, 3, spec.crop, spec.crop), dtype=np.float32)
    results = model_only(models, inputs, batches=args.batch, threads=args.threads, rounds=args.rounds or 15)
    if args.json:
        _print_json([{**r.__dict__, "best_ms_per_image": r.best_ms_per_image, "images_per_second": r.images_per_second}
                     for r in results])
    else:
        print(format_table(results))
    return EXIT_OK
