"""The daemon's commands: ``run``, ``check-config`` and ``status``."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_commands(sub: argparse._SubParsersAction[Any]) -> None:
    s = sub.add_parser("run", help="the daemon, in the foreground (systemd Type=notify)")
    s.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")

    s = sub.add_parser("check-config",
                       help="validate a config; print every problem with its key path")
    s.add_argument("-c", "--config", required=True, type=Path, help="YAML config file")
    s.add_argument("--unit", type=Path,
                   help="check the shutdown deadline against this unit file's TimeoutStopSec "
                        "(default: the installed edge-infer.service, if any)")

    s = sub.add_parser("status",
                       help="the running daemon at a glance, read from its HTTP endpoints")
    s.add_argument("--url", help="the daemon's HTTP endpoint (default: from -c CONFIG's "
                                 "metrics.host/port, else http://127.0.0.1:9464)")
    s.add_argument("-c", "--config", type=Path,
                   help="the daemon's YAML config, to find its metrics port")
    s.add_argument("--interval", type=float, default=1.0,
                   help="seconds between the two scrapes that give rates (default 1; 0: one "
                        "scrape, no rates)")
