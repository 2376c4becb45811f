"""Whose is a commit error: one input's fails or parks that input alone, the store's blocks output, a short
resource waits; new folders are made durable level by level. Real files, real flags (chattr), real errnos."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import edge_infer.pipeline.workers as workers_module
from edge_infer.commit.parked import PARKED_NAME, ParkedInputs
from edge_infer.commit.writer import SourceRoute
from edge_infer.config import FolderSourceConfig
from edge_infer.errors import ResourceError
from edge_infer.pipeline.context import StageContext
from edge_infer.sinks import durable
from edge_infer.sources.folder import FolderSource
from tests.support.ci import skip_unless_ci
from tests.support.writer import finished_jobs, make_worker, make_writer


def _chattr(flag: str, path: Path) -> None:
    r = subprocess.run(["chattr", flag, str(path)], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        skip_unless_ci(f"chattr {flag} needs root and ext4: {r.stderr.strip()}")


def _until(pred, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _in_sub(tmp_path):  # type: ignore[no-untyped-def]
    """One finished job for ``sub/<name>`` in the inbox, and a writer whose route knows the inbox."""
    job = finished_jobs(tmp_path, 1)[0]
    (tmp_path / "inbox" / "sub").mkdir()
    job.path = job.path.rename(tmp_path / "inbox" / "sub" / job.rel)
    job.rel = f"sub/{job.rel}"
    writer, done = make_writer(tmp_path)
    r = writer._routes["s"]
    writer._routes["s"] = SourceRoute(r.after, r.done_dir, r.failed_dir, r.on_done, tmp_path / "inbox")
    return job, writer, done


def test_new_folders_are_fsynced_into_their_parents_level_by_level(tmp_path, monkeypatch):
    synced: list[Path] = []
    real = durable.fsync_dir
    monkeypatch.setattr(durable, "fsync_dir", lambda p: (synced.append(Path(p)), real(p))[1])
    (tmp_path / "done").mkdir()
    durable.make_dirs(tmp_path / "done" / "a" / "b")
    assert synced == [tmp_path / "done", tmp_path / "done" / "a"]  # each new level, into its parent
    synced.clear()
    durable.make_dirs(tmp_path / "done" / "a" / "b")  # already there: nothing to sync
    assert synced == []
    (tmp_path / "done" / "file").write_text("")
    with pytest.raises(NotADirectoryError):  # not FileExistsError: that says the destination itself exists
        durable.make_dirs(tmp_path / "done" / "file")
    with pytest.raises(NotADirectoryError):
        durable.make_dirs(tmp_path / "done" / "file" / "below")
    # The writes use it: a result in a new sub-folder, an input moved into a new one.
    durable.write_json_atomic(tmp_path / "results" / "s" / "sub" / "x.json", {}, tmp_path / "results")
    (tmp_path / "in").write_text("x")
    durable.move_file(tmp_path / "in", tmp_path / "done" / "new" / "in")
    assert {tmp_path / "results" / "s", tmp_path / "done"} <= set(synced)


def test_a_result_that_cannot_be_written_for_itself_fails_that_input_alone(tmp_path):
    job, writer, done = _in_sub(tmp_path)
    (tmp_path / "results" / "s").mkdir(parents=True)
    (tmp_path / "results" / "s" / "sub").write_text("")  # a file where the folder of its result must be
    writer.commit(job)
    assert writer.blocked_kind is None and done == [job]
    record = json.loads((tmp_path / "failed" / f"{job.rel}.error.json").read_text())
    assert record["status"] == "failed" and record["error"]["kind"] == "io"
    message = record["error"]["message"]
    assert "ENOTDIR" in message and str(tmp_path / "results" / "s" / f"{job.rel}.json") in message
    assert (tmp_path / "failed" / job.rel).exists() and not job.path.exists()


def test_an_input_that_cannot_be_moved_is_parked_remembered_skipped_and_moved_once_it_can(tmp_path):
    job, writer, done = _in_sub(tmp_path)
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "sub").write_text("in the way")
    writer.commit(job)
    assert writer.blocked_kind is None and done == [job]  # not held: the writer goes on with the others
    record = tmp_path / "results" / "s" / f"{job.rel}.json"
    first = record.read_bytes()
    assert json.loads(first)["status"] == "ok" and job.path.exists()
    assert writer._metrics.registry.get_sample_value("edge_infer_images_total", {"source": "s", "outcome": "ok"}) == 1
    writer._parked.flush()

    # A restart: the list is read back, the folder source's scan skips the input while it is unchanged.
    parked = ParkedInputs(tmp_path / "results" / PARKED_NAME)
    parked.load()
    saved = json.loads((tmp_path / "results" / PARKED_NAME).read_text())["inputs"]
    assert [e["rel"] for e in saved] == [job.rel] and "ENOTDIR" in saved[0]["reason"]
    cfg = FolderSourceConfig(name="s", path=tmp_path / "inbox", done_dir=tmp_path / "done",
                             failed_dir=tmp_path / "failed")
    src = FolderSource(StageContext(parked=parked), config=cfg)
    assert src.scan() == 1 and not src._settling and not src._ready
    assert src.scan() == 1 and not src._settling  # and at every rescan

    # The obstacle gone, the acknowledgement alone is retried: moved, the record as it was.
    writer2, _ = make_writer(tmp_path, parked=parked)
    (tmp_path / "done" / "sub").unlink()
    writer2._parked.retry_due(writer2._settle, lambda j: None, writer2._routes)
    assert (tmp_path / "done" / job.rel).exists() and not job.path.exists() and record.read_bytes() == first
    assert json.loads((tmp_path / "results" / PARKED_NAME).read_text())["inputs"] == []


def test_a_parked_input_that_changes_is_a_new_input(tmp_path):
    job, writer, _ = _in_sub(tmp_path)
    _chattr("+i", job.path)
    try:
        writer.commit(job)
        cfg = FolderSourceConfig(name="s", path=tmp_path / "inbox", done_dir=tmp_path / "done",
                                 failed_dir=tmp_path / "failed")
        src = FolderSource(StageContext(parked=writer._parked), config=cfg)
        src.scan()
        assert not src._settling
    finally:
        _chattr("-i", job.path)
    os.utime(job.path, ns=(time.time_ns(), time.time_ns()))  # rewritten, as far as its mtime says
    src.scan()
    assert str(job.path) in src._settling and not writer._parked.due()


def test_an_unwritable_done_root_is_the_stores_problem_and_blocks_until_fixed(tmp_path):
    job, writer, done = _in_sub(tmp_path)
    (tmp_path / "done").mkdir()
    _chattr("+i", tmp_path / "done")  # even root may not add to it
    writer._finished.put(job)
    writer.start()
    try:
        assert _until(lambda: writer.blocked_kind == "readonly"), writer.blocked_kind
        assert job.path.exists() and not done and not writer._parked.due()
    finally:
        _chattr("-i", tmp_path / "done")
    try:
        assert _until(lambda: done == [job]) and writer.blocked_kind is None
        assert (tmp_path / "done" / job.rel).exists()
    finally:
        writer.stop()
        assert writer.join(5)


def test_out_of_descriptors_the_writer_waits_and_fails_nothing(tmp_path, monkeypatch):
    job = finished_jobs(tmp_path, 1)[0]
    writer, done = make_writer(tmp_path)
    real, seen = durable._write_tmp, []

    def emfile_twice(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(writer.blocked_kind)
        if len(seen) <= 2:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real(*args, **kwargs)

    monkeypatch.setattr(durable, "_write_tmp", emfile_twice)
    writer._finished.put(job)
    writer.start()
    try:
        assert _until(lambda: done == [job])
    finally:
        writer.stop()
        assert writer.join(5)
    assert "resources" in seen and writer.blocked_kind is None
    assert json.loads((tmp_path / "results" / "s" / f"{job.rel}.json").read_text())["status"] == "ok"
    assert not (tmp_path / "failed").exists()


def test_out_of_descriptors_a_worker_waits_for_the_open_instead_of_failing(tmp_path, monkeypatch):
    job = finished_jobs(tmp_path, 1)[0]
    real, calls = workers_module.open_input, []

    def emfile_twice(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) <= 2:
            raise ResourceError("cannot open: Too many open files")
        return real(*args)

    monkeypatch.setattr(workers_module, "open_input", emfile_twice)
    job.sha256 = None
    make_worker(tmp_path).process(job)
    assert job.error is None and job.sha256 and len(calls) == 3


def test_an_input_that_can_get_no_record_at_all_is_parked_for_this_run_and_retried(tmp_path):
    job, writer, done = _in_sub(tmp_path)
    for root in (tmp_path / "results" / "s", tmp_path / "failed"):
        root.mkdir(parents=True)
        (root / "sub").write_text("in the way")  # neither its result nor its failure record can be written
    writer.commit(job)
    assert writer.blocked_kind is None and done == [job] and job.path.exists()
    assert not writer._metrics.registry.get_sample_value("edge_infer_images_total", {"source": "s", "outcome": "ok"})
    writer._parked.flush()
    assert not (tmp_path / "results" / PARKED_NAME).exists()  # nothing to skip at the next start: redone then
    (tmp_path / "results" / "s" / "sub").unlink()
    for entry in writer._parked._entries.values():
        entry.next_try = 0.0  # due now, not in FIRST_RETRY_S
    writer._parked.retry_due(writer._settle, lambda j: writer._observe(j, 0.0), writer._routes)
    assert json.loads((tmp_path / "results" / "s" / f"{job.rel}.json").read_text())["status"] == "ok"
    assert (tmp_path / "done" / job.rel).exists() and not list((tmp_path / "failed").rglob("*.error.json"))
    assert writer._metrics.registry.get_sample_value("edge_infer_images_total", {"source": "s", "outcome": "ok"}) == 1
