"""The whole command line: its global options and every command's arguments, as one parser."""
from __future__ import annotations

import argparse

from .. import __version__
from . import daemon_args, model_args, store_args, tool_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-infer", description="int8 MobileNetV2 image classification for edge devices")
    p.add_argument("--version", action="version", version=f"edge-infer {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    # In the order --help lists them.
    daemon_args.add_commands(sub)
    tool_args.add_info_classify(sub)
    model_args.add_commands(sub)
    store_args.add_commands(sub)
    tool_args.add_bench(sub)
    return p
