"""Odd entries in the inbox: symlinks pointing outside it (to a file, to a folder), a FIFO, names with a
newline, names that are not UTF-8, names too long to take a suffix, a deep tree. Each ends with one result
or one failure record; nothing outside the configured folders is read, moved or written."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.support.daemon import RunningApp, daemon, free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.images import write_images
from tests.support.metrics import metric

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


def _stored(results: Path) -> dict[str, dict]:
    """The results under ``results``, by the name they are filed under."""
    return {p.name[:-len(".json")]: json.loads(p.read_text()) for p in results.iterdir() if p.name.endswith(".json")}


def _rename_in(staging: Path, inbox: Path, data: bytes, name: str) -> None:
    (staging / name).write_bytes(data)
    os.rename(staging / name, inbox / name)  # complete at once, and over what "keep" left there


@pytest.mark.parametrize("after", ["move", "delete", "keep"])
def test_the_same_name_twice_with_other_bytes_keeps_both_photos_and_both_results(tmp_path, after):
    a, b = (p.read_bytes() for p in write_images(tmp_path / "staging", 2))
    broken = (b"not an image, the first", b"not an image, the second")
    sha = {data: hashlib.sha256(data).hexdigest() for data in (a, b, *broken)}
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    cfg = write_config(tmp_path, [{"name": "drops", "type": "folder", "path": "inbox", "after": after,
                                   "done_dir": "done", "failed_dir": "failed"}])
    with RunningApp(cfg) as run:
        def count(outcome: str) -> float:
            return run.sample("edge_infer_images_total", source="drops", outcome=outcome)

        for i, (photo, junk) in enumerate(zip((a, b), broken), 1):  # a counter restarted: the same names again
            _rename_in(staging, inbox, photo, "IMG_0001.JPG")
            _rename_in(staging, inbox, junk, "scan.jpg")
            wait_for(lambda: count("ok") == i and count("failed") == i, 60, f"drop {i}")
        _rename_in(staging, inbox, a, "IMG_0001.JPG")  # the same bytes again: a duplicate, not a third copy
        wait_for(lambda: count("duplicate") == 1, 60, "the duplicate")
        if after != "keep":
            wait_for(lambda: not files_under(inbox), 10, "the inbox empty")
    tag = {data: f"IMG_0001~{sha[data][:8]}.JPG" for data in (a, b)}
    results = _stored(tmp_path / "results" / "drops")
    assert set(results) == {"IMG_0001.JPG", tag[b]}
    for stored, data in (("IMG_0001.JPG", a), (tag[b], b)):
        r = results[stored]
        assert (r["status"], r["input"], r["stored_as"], r["input_sha256"]) == ("ok", "IMG_0001.JPG", stored, sha[data])
    if after == "move":
        assert files_under(tmp_path / "done") == {"IMG_0001.JPG", tag[b]}
        assert (tmp_path / "done" / "IMG_0001.JPG").read_bytes() == a and (tmp_path / "done" / tag[b]).read_bytes() == b
    failed = tmp_path / "failed"
    second = f"scan~{sha[broken[1]][:8]}.jpg"
    assert files_under(failed) - {".writing"} == {"scan.jpg", "scan.jpg.error.json", second, f"{second}.error.json"}
    for stored, data in (("scan.jpg", broken[0]), (second, broken[1])):
        assert (failed / stored).read_bytes() == data
        record = json.loads((failed / f"{stored}.error.json").read_text())
        assert (record["input"], record["stored_as"], record["input_sha256"]) == ("scan.jpg", stored, sha[data])


def test_a_kill_between_a_suffixed_result_and_its_move_is_a_duplicate_at_the_restart(tmp_path):
    """The second IMG_0001.JPG: its result is durable (under the suffixed name), then the daemon is killed
    before the move (the fault hook, off unless set). The next start finds that result for the same bytes."""
    a, b = (p.read_bytes() for p in write_images(tmp_path / "staging", 2))
    port = free_port()
    cfg = write_config(tmp_path, metrics={"port": port})
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    with daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        _rename_in(staging, inbox, a, "IMG_0001.JPG")
        wait_for(lambda: (tmp_path / "done" / "IMG_0001.JPG").exists(), 60, "the first photo done")
        proc.terminate()
        assert proc.wait(30) == 0
    tag = f"IMG_0001~{hashlib.sha256(b).hexdigest()[:8]}.JPG"
    with daemon(cfg, env_extra={"EDGE_INFER_FAULTS": "crash_after_commit=IMG_0001"},
                log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        _rename_in(staging, inbox, b, "IMG_0001.JPG")
        assert proc.wait(60) == -9, "the daemon did not die after the commit"
    results = tmp_path / "results" / "drops"
    claimed = list((inbox / ".edge-infer" / "claimed").iterdir())  # it waits in its claim
    assert set(_stored(results)) == {"IMG_0001.JPG", tag} and [c.read_bytes() for c in claimed] == [b]
    written = (results / f"{tag}.json").read_bytes()
    with daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        wait_for(lambda: not files_under(inbox), 60, "the inbox empty")
        assert metric(port, 'edge_infer_images_total{outcome="duplicate",source="drops"}') == 1
        proc.terminate()
        assert proc.wait(30) == 0
    assert set(_stored(results)) == {"IMG_0001.JPG", tag} and (results / f"{tag}.json").read_bytes() == written
    assert (tmp_path / "done" / "IMG_0001.JPG").read_bytes() == a and (tmp_path / "done" / tag).read_bytes() == b
