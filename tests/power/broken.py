"""The daemon with a deliberately wrong write order, to show that the power cuts find one:

    python tests/power/broken.py NAME run -c CONFIG

NAME is one of:

- ``unsynced-folder``: a record is renamed into place but its folder is never fsynced, so the input can be
  moved to done/ (and that folder synced) while the record's name is still only in the cache;
- ``unsynced-data``: a record's data is never fdatasynced before its rename, so the name can outlive the
  bytes it points to.

Each is a copy of ``edge_infer.sinks.durable``'s commit with one sync left out, put in place of the one the
writer calls (commit/record_writes.py); nothing in the package changes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_infer import cli
from edge_infer.commit import record_writes
from edge_infer.sinks import durable


def _group_without_folder_sync(records: list[tuple[Path, Any, Path]], pool: Any = None) -> None:
    for path, obj, root in records:
        durable.make_dirs(path.parent)
        (root / durable.TMP_DIR).mkdir(exist_ok=True)
        tmp = durable._write_tmp(root / durable.TMP_DIR, durable.encode_json(obj))  # data fsynced
        os.replace(tmp, path)  # ... and no fsync of path.parent


def _group_without_data_sync(records: list[tuple[Path, Any, Path]], pool: Any = None) -> None:
    folders = set()
    for path, obj, root in records:
        durable.make_dirs(path.parent)
        (root / durable.TMP_DIR).mkdir(exist_ok=True)
        tmp = durable._write_tmp(root / durable.TMP_DIR, durable.encode_json(obj), sync=False)
        os.replace(tmp, path)
        folders.add(path.parent)
    for folder in folders:
        durable.fsync_dir(folder)


BROKEN = {"unsynced-folder": _group_without_folder_sync, "unsynced-data": _group_without_data_sync}


def main() -> int:
    name, argv = sys.argv[1], sys.argv[2:]
    if name not in BROKEN:
        raise SystemExit(f"unknown breakage {name!r}; one of {sorted(BROKEN)}")
    # A patch that reaches nothing would let the cuts pass and the test fail for the wrong reason.
    assert record_writes.write_json_group is durable.write_json_group, "the writer's commit moved"
    record_writes.write_json_group = BROKEN[name]  # type: ignore[assignment]  # where the writer calls it
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
