"""Command line: runs each command, and is the only place that maps errors to exit codes and prints.

The commands' arguments and help are declared in ``commands/``; each command's body here is a few
lines of wiring into its package, importing it only when run (``--help`` loads no heavy library).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .commands.parser import build_parser
from .errors import (ConfigError, EdgeInferError, ExportError, InvalidConfig, ModelError,
                     VerificationError)
from .train.settings import FineTuneSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; the systemd unit does not restart on it
EXIT_VERIFY = 3

log = logging.getLogger("edge_infer")

# Most specific first: what each expected error prints and the exit status it maps to.
_ERRORS: tuple[tuple[type[Exception], str, int], ...] = (
    (InvalidConfig, "invalid config ", EXIT_CONFIG),
    (ConfigError, "config error: ", EXIT_CONFIG),
    (VerificationError, "verification failed: ", EXIT_VERIFY),
    (EdgeInferError, "", EXIT_FAILED),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (logging.DEBUG if args.verbose
             else logging.INFO if args.command in ("export", "train", "run") else logging.WARNING)
    # The daemon logs to stderr for journald, which stamps each line itself.
    fmt = ("%(levelname)s %(name)s: %(message)s" if args.command == "run"
           else "%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    commands = {"run": cmd_run, "check-config": cmd_check_config, "status": cmd_status,
                "info": cmd_info, "classify": cmd_classify, "export": cmd_export,
                "train": cmd_train, "models": cmd_models, "bench": cmd_bench}
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
    from .classifier.manifest import default_model_path, load_manifest
    from .config import load_config
    from .ops.preflight import check_supported

    config = load_config(args.config)
    check_supported(config)
    model = config.model.path or default_model_path()
    # The model and its manifest must at least be there and readable (the sha256 is checked at
    # start).
    try:
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

    # A fatal signal in the daemon's own process (SIGSEGV in a C library, SIGABRT) writes every
    # thread's Python stack to stderr, which is the journal: the crash names where it happened, not
    # just status=11.
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
            # A missing, corrupt or mismatched model is not cured by a restart: exit 78, which the
            # unit does not restart (RestartPreventExitStatus=78), naming the key that points at it.
            raise ConfigError("model.path", str(e)) from e
        except OSError as e:
            raise EdgeInferError(f"cannot start: {e}") from e
    if not clean:  # the daemon's last log line names the stages it gave up on
        print(f"edge-infer: stopped uncleanly, abandoning {', '.join(app.abandoned)}",
              file=sys.stderr)
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
                 "onnxruntime": {"version": ort.__version__,
                                 "providers": ort.get_available_providers()}})
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

    _, failed = classify(args.paths, session, args.top_k, emit, batch_size=args.batch_size,
                         on_item=progress.advance)
    progress.close()
    return EXIT_FAILED if failed else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    try:
        from .export.quantize import QuantSettings
        from .export.steps import ExportOptions, run_export
    except ImportError as e:
        raise ExportError("export needs the 'export' extra (pip install 'edge-infer[export]'): "
                          f"{e}") from e

    opts = ExportOptions(
        weights=args.weights, images=args.images, out=args.out, labels_csv=args.labels_csv,
        class_names=args.class_names, width_mult=args.width_mult, opset=args.opset,
        calib_every=args.calib_every, min_agreement=args.min_agreement,
        quant=QuantSettings(calibration=args.calibration, percentile=args.percentile),
        torchscript=args.torchscript, ops_yaml=args.ops_yaml, bench=not args.no_bench)
    report = run_export(opts)
    print(report.table())
    print(f"wrote {report.int8_path} and {report.fp32_path} (each with model.json)")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from .train.command import cmd_train as train

    return train(args)


def cmd_models(args: argparse.Namespace) -> int:
    from .tools.models_cmd import run

    sys.stdout.write(run(args))
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
        print(end_to_end(args.images, rounds=args.rounds or 3, model=model, daemons=daemons,
                         idle_s=args.idle_seconds))
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
        inputs = np.random.default_rng(0).standard_normal((16, 3, spec.crop, spec.crop),
                                                          dtype=np.float32)
    results = model_only(models, inputs, batches=args.batch, threads=args.threads,
                         rounds=args.rounds or 15)
    if args.json:
        _print_json([{**r.__dict__, "best_ms_per_image": r.best_ms_per_image,
                      "images_per_second": r.images_per_second} for r in results])
    else:
        print(format_table(results))
    return EXIT_OK
