"""Durable JSON files: written to a temporary name, fsynced, renamed; no reader ever sees a partial file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Commit ``obj`` at ``path``: after this returns, a power cut leaves either the old file or this one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A hidden temporary name in the same folder: rename is atomic only within a file system, and a
    # hidden name is never mistaken for a result by readers that list the folder.
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    data = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    """The object at ``path``, or None when it is missing or not a complete JSON object."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def result_path(output_dir: Path, source: str, rel: str) -> Path:
    return output_dir / source / f"{rel}.json"


def error_path(failed_dir: Path, rel: str) -> Path:
    return failed_dir / f"{rel}.error.json"
