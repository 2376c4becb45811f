"""A failed input moved back into the inbox to retry it (as the quarantine message invites), alone
or with its failure record: nothing in the failed folder is replaced, no record once written
changes, and every record's ``stored_as`` still holds the bytes it names."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.metrics import metric

BROKEN = b"not an image, and it never will be"


def _failed_count(port: int) -> float:
    return metric(port, 'edge_infer_images_total{outcome="failed",source="drops"}')


def _back(tmp_path: Path, port: int, name: str, n: int) -> None:
    """``failed/<name>`` moved back into the inbox by a user; waits until it is filed again."""
    os.rename(tmp_path / "failed" / name, tmp_path / "inbox" / name)
    wait_for(lambda: _failed_count(port) == n and not files_under(tmp_path / "inbox"), 60,
             f"{name} filed again")


def _records(failed: Path) -> dict[str, dict]:
    """The failure records in ``failed``, by their file names."""
    out = {}
    for p in failed.iterdir():
        record = json.loads(p.read_bytes()) if p.name.endswith(".error.json") else None
        if isinstance(record, dict) and record.get("status") == "failed" and "stored_as" in record:
            out[p.name] = record
    return out


def _start(tmp_path: Path):
    port = free_port()
    (tmp_path / "inbox").mkdir()
    (tmp_path / "staging").mkdir()
    (tmp_path / "staging" / "scan.jpg").write_bytes(BROKEN)
    return port, daemon(write_config(tmp_path, metrics={"port": port}), log=tmp_path / "daemon.log")


def _first_failure(tmp_path: Path, port: int) -> bytes:
    """scan.jpg dropped and failed; its failure record's bytes."""
    wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
    os.rename(tmp_path / "staging" / "scan.jpg", tmp_path / "inbox" / "scan.jpg")
    wait_for(lambda: (tmp_path / "failed" / "scan.jpg").exists(), 60, "scan.jpg failed")
    return (tmp_path / "failed" / "scan.jpg.error.json").read_bytes()


def test_a_failed_input_moved_back_fails_again_without_changing_its_record(tmp_path):
    port, running = _start(tmp_path)
    failed = tmp_path / "failed"
    with running as proc:
        first = _first_failure(tmp_path, port)
        _back(tmp_path, port, "scan.jpg", 2)
        proc.terminate()
        assert proc.wait(30) == 0
    assert (failed / "scan.jpg").read_bytes() == BROKEN
    assert (failed / "scan.jpg.error.json").read_bytes() == first, "its first record was rewritten"
    assert [r["input"] for r in _records(failed).values()] == ["scan.jpg"], "one record, one input"


def test_a_failure_record_moved_back_with_its_input_is_never_overwritten_in_failed(tmp_path):
    """``mv failed/* inbox/``: the record is an input too (not an image), and it is filed in
    failed/ first; then the retried input's new failure record must not land on it."""
    port, running = _start(tmp_path)
    failed = tmp_path / "failed"
    with running as proc:
        record_bytes = _first_failure(tmp_path, port)
        _back(tmp_path, port, "scan.jpg.error.json", 2)
        _back(tmp_path, port, "scan.jpg", 3)
        proc.terminate()
        assert proc.wait(30) == 0
    records = _records(failed)
    assert sorted(r["input"] for r in records.values()) == ["scan.jpg", "scan.jpg.error.json"]
    for name, r in records.items():
        held = (failed / r["stored_as"]).read_bytes()
        assert hashlib.sha256(held).hexdigest() == r["input_sha256"], \
            f"{name}: {r['stored_as']} no longer holds the bytes of {r['input']!r}: overwritten"
    kept = [p for p in failed.iterdir() if p.is_file() and p.read_bytes() == record_bytes]
    assert kept, "the record the user filed back into the inbox is gone from failed/"
