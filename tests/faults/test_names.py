"""Odd entries in the inbox: symlinks pointing outside it (to a file, to a folder), a FIFO, names with a
newline, names that are not UTF-8, names too long to take a suffix, a deep tree. Each ends with one result
or one failure record; nothing outside the configured folders is read, moved or written."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.conftest import write_images
from tests.faults.conftest import files_under
from tests.integration.daemon_util import RunningApp, wait_for, write_config

# watchdog warns each time a new folder's watch was already added by its recursive walk: harmless, and loud here.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

LONG = "L" * 247 + ".jpg"  # 251 bytes: the input fits a file name, "<name>.json" (256) does not
NON_UTF8 = os.fsdecode(b"caf\xe9 \xff.jpg")
DEEP = "/".join(f"level{i:02d}" for i in range(40)) + "/deep.jpg"


def _odd_entries(inbox: Path, outside: Path) -> None:
    os.symlink(outside / "secret.jpg", inbox / "link_out.jpg")
    os.symlink(outside, inbox / "link_dir")
    os.mkfifo(inbox / "fifo.jpg")


def test_symlinks_fifos_and_odd_names_each_get_one_record_and_nothing_outside_is_touched(tmp_path):
    photo = write_images(tmp_path / "staging", 1)[0].read_bytes()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(photo)
    inbox = tmp_path / "inbox"
    (inbox / "at_start").mkdir(parents=True)
    _odd_entries(inbox / "at_start", outside)  # found by the start-up scan
    cfg = write_config(tmp_path)
    with RunningApp(cfg) as run:
        (inbox / "live").mkdir()
        _odd_entries(inbox / "live", outside)  # seen arriving
        for name in ("new\nline.jpg", LONG, NON_UTF8, DEEP):
            (inbox / name).parent.mkdir(parents=True, exist_ok=True)
            (inbox / name).write_bytes(photo)
        wait_for(lambda: run.sample("edge_infer_images_total", source="drops", outcome="ok") == 4
                 and run.sample("edge_infer_images_total", source="drops", outcome="failed") == 6, 60,
                 "4 results and 6 failure records")
        wait_for(lambda: not files_under(inbox), 10, "the inbox empty")
    # Outside the folders: untouched, not classified.
    assert (outside / "secret.jpg").read_bytes() == photo and os.listdir(outside) == ["secret.jpg"]
    failed = tmp_path / "failed"
    for sub in ("at_start", "live"):
        for name in ("link_out.jpg", "link_dir", "fifo.jpg"):
            record = json.loads((failed / sub / f"{name}.error.json").read_text())
            assert record["status"] == "failed" and record["error"]["kind"] == "unsupported", record
        assert (failed / sub / "link_out.jpg").is_symlink() and (failed / sub / "link_dir").is_symlink()
    sha = hashlib.sha256(photo).hexdigest()
    results = tmp_path / "results" / "drops"
    for name in ("new\nline.jpg", NON_UTF8, DEEP):
        r = json.loads((results / f"{name}.json").read_bytes())
        assert r["status"] == "ok" and r["input"] == name and r["input_sha256"] == sha
        assert (tmp_path / "done" / name).read_bytes() == photo
    # The long name's result cannot be "<name>.json": it is cut, with a hash of the full name.
    long_results = [p for p in results.iterdir() if p.name.startswith("LLLL")]
    assert len(long_results) == 1 and len(os.fsencode(long_results[0].name)) <= 255
    assert json.loads(long_results[0].read_text())["input"] == LONG
    assert (tmp_path / "done" / LONG).exists()
    assert not [p for p in (tmp_path / "results").rglob("*") if "outside" in p.name or "secret" in p.name]
