"""``edge-infer`` as a user runs it: a real subprocess of this Python on this checkout."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edge_infer", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=cwd)
