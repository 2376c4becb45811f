"""An output folder checked before hours of work are spent on filling it (export, train)."""
from __future__ import annotations

import tempfile
from pathlib import Path


def check_writable(out: Path, error: type[Exception]) -> None:
    """``out`` made if missing and a file written in it; else ``error`` naming the folder."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise error(f"output folder {out} is not writable: {e.strerror or e}") from e
