"""The model store's commands: ``models list|add|deploy|rollback``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _where(s: argparse.ArgumentParser) -> None:
    s.add_argument("-c", "--config", type=Path,
                   help="the daemon's YAML config: its model.store, and its metrics port to "
                        "confirm a deploy")
    s.add_argument("--store", type=Path, help="the store's folder (default: from -c CONFIG)")


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    m = sub.add_parser("models", help="the model versions kept on this device: list, add, deploy, "
                                      "roll back")
    cmds = m.add_subparsers(dest="models_command", required=True)
    s = cmds.add_parser("list", help="every version, the serving one and the previous marked")
    _where(s)
    s.add_argument("--json", action="store_true", help="one JSON array of the versions' records")

    s = cmds.add_parser("add", help="keep a model folder (edge-infer train's --out) as a new "
                                    "version, once it loads and passes its self-test")
    _where(s)
    s.add_argument("dir", type=Path, help="a folder with model.onnx and model.json")
    s.add_argument("--name", help="the version's name (default: v1, v2, ...)")

    s = cmds.add_parser("deploy", help="make a version serve, through the daemon's self-tested "
                                       "hot swap; the serving one becomes the previous")
    _where(s)
    s.add_argument("version")
    _wait(s)

    s = cmds.add_parser("rollback", help="serve the previous version again")
    _where(s)
    _wait(s)


def _wait(s: argparse.ArgumentParser) -> None:
    s.add_argument("--wait", type=float, default=30.0,
                   help="with -c CONFIG: seconds to wait for the running daemon to serve the "
                        "version, else it is undone (default 30; 0: do not wait)")
