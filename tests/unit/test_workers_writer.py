"""The preprocessing worker and the writer on real files: failures become records, never exceptions."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge_infer.pipeline.jobs import FolderInput
from tests.support.images import write_images
from tests.support.writer import finished_jobs, make_worker, make_writer


def test_a_file_removed_before_it_is_read_gets_an_error_record(tmp_path):
    job = FolderInput("s", "gone.jpg", tmp_path / "inbox" / "gone.jpg")
    make_worker(tmp_path).process(job)
    assert job.error is not None and job.error.kind == "io" and "vanished" in job.error.message
    writer, done = make_writer(tmp_path)
    writer.commit(job)  # the input is gone: the record is still written, nothing raises
    record = json.loads((tmp_path / "failed" / "gone.jpg.error.json").read_text())
    assert record["status"] == "failed" and record["error"]["kind"] == "io" and done == [job]


def test_an_unreadable_file_is_an_io_error(tmp_path):
    from edge_infer.errors import InputError
    from edge_infer.pipeline.input_file import read_input

    path = write_images(tmp_path, 1)[0]
    path.chmod(0)
    # root reads anything: check in a forked child that drops to an unprivileged user, as the service runs.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            if os.geteuid() == 0:
                os.setuid(65534)
            read_input(path, 10**7)
            os.write(w, b"read it")
        except InputError as e:
            os.write(w, f"{e.kind} {e.message}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        assert f.read().startswith("io cannot read file: Permission denied")


def test_a_read_error_from_the_device_is_an_io_error(tmp_path):
    from edge_infer.errors import InputError
    from edge_infer.pipeline.input_file import read_input

    # Reading /proc/self/mem at offset 0 fails with EIO, as a bad SD-card sector does.
    with pytest.raises(InputError) as e:
        read_input(Path("/proc/self/mem"), 10**7)
    assert e.value.kind == "io" and "Input/output error" in e.value.message


def test_file_over_the_byte_limit_is_refused_before_reading(tmp_path):
    path = write_images(tmp_path, 1)[0]
    job = FolderInput("s", path.name, path)
    make_worker(tmp_path, max_bytes=100).process(job)
    assert job.error.kind == "too_large" and "max_file_bytes" in job.error.message


def test_the_workers_decode_limits_come_from_the_config(tmp_path):
    """pipeline.max_decode_mb and pipeline.formats reach the decoder, and its messages name them."""
    jpeg, png = write_images(tmp_path, 1, (3000, 2000))[0], write_images(tmp_path, 1, (3000, 2000), fmt="png")[0]
    jobs = [FolderInput("s", p.name, p) for p in (jpeg, png)]
    make_worker(tmp_path, max_decode_mb=8, formats=("JPEG",)).process(jobs[0])
    make_worker(tmp_path, formats=("JPEG",)).process(jobs[1])
    assert jobs[0].error is None  # drafted to 1/4 scale: under 8 MB
    assert jobs[1].error.kind == "unsupported" and "pipeline.formats" in jobs[1].error.message
    make_worker(tmp_path, max_decode_mb=8).process(jobs[1])
    assert jobs[1].error.kind == "too_large" and "pipeline.max_decode_mb (8)" in jobs[1].error.message


def test_ok_result_is_committed_before_the_input_moves(tmp_path):
    path = write_images(tmp_path / "inbox" / "sub", 1)[0]
    job = FolderInput("s", "sub/" + path.name, path)
    make_worker(tmp_path).process(job)
    job.predictions = [{"index": 1, "label": "x", "score": 1.0}]
    writer, done = make_writer(tmp_path)
    writer.commit(job)
    result = json.loads((tmp_path / "results" / "s" / "sub" / f"{path.name}.json").read_text())
    assert result["input"] == f"sub/{path.name}" and result["input_sha256"] == job.sha256
    assert (tmp_path / "done" / "sub" / path.name).exists() and not path.exists()
    assert not list((tmp_path / "results").rglob(".*.tmp"))


def test_a_full_disk_holds_the_job_and_retries_instead_of_failing_it(tmp_path):
    path = write_images(tmp_path / "inbox", 1)[0]
    job = FolderInput("s", path.name, path)
    make_worker(tmp_path).process(job)
    job.predictions = [{"index": 1, "label": "x", "score": 1.0}]
    writer, done = make_writer(tmp_path)
    (tmp_path / "results").write_text("")  # a file where the results folder must be: every write fails
    writer._finished.put(job)
    writer.start()
    try:
        import time
        deadline = time.monotonic() + 10
        while writer.blocked_reason is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.blocked_reason and path.exists() and not done  # held, not failed, not acknowledged
        (tmp_path / "results").unlink()  # space comes back
        while not done and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        assert done == [job] and writer.blocked_reason is None and not path.exists()
    finally:
        writer.stop()
        assert writer.join(5)


def test_a_burst_of_results_syncs_each_own_file_once_and_its_folder_once(tmp_path, monkeypatch):
    import edge_infer.sinks.durable as jf

    syncs: list[str] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync
    monkeypatch.setattr(jf.os, "fdatasync", lambda fd: (syncs.append("data"), real_fdatasync(fd))[1])
    monkeypatch.setattr(jf.os, "fsync", lambda fd: (syncs.append("fsync"), real_fsync(fd))[1])
    writer, done = make_writer(tmp_path, after="delete")
    jobs = finished_jobs(tmp_path, 10)
    writer._write_group(jobs)  # what the writer thread does with the jobs it finds waiting together
    # Nothing for the whole file system (syncfs would also flush every other program's data): each record's
    # file, then the one folder they were renamed into (the order: tests/unit/test_group_commit.py).
    # (before the records: a new results/s folder is fsynced into its parent)
    new_dirs = syncs.index("data")
    assert syncs == ["fsync"] * new_dirs + ["data"] * 10 + ["fsync"] and new_dirs <= 2
    for job in jobs:
        writer.commit(job)  # the records are committed: no rewrite, only the acknowledgement
    assert len(syncs) == new_dirs + 11 and len(done) == 10 and not list((tmp_path / "inbox").iterdir())
    records = sorted((tmp_path / "results" / "s").iterdir())
    assert [p.name for p in records] == sorted(f"{j.rel}.json" for j in jobs)
    assert all(json.loads(p.read_text())["status"] == "ok" for p in records)
    assert not list((tmp_path / "results" / ".writing").iterdir())


def test_a_group_that_fails_midway_leaves_no_partial_records_and_each_job_retries_alone(tmp_path, monkeypatch):
    import edge_infer.sinks.durable as jf

    jobs = finished_jobs(tmp_path, 4)
    calls = {"n": 0}
    real = jf._write_tmp

    def full_disk_on_the_third(folder, data, prefix="", sync=True):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(folder, data, prefix, sync)

    monkeypatch.setattr(jf, "_write_tmp", full_disk_on_the_third)
    writer, done = make_writer(tmp_path, after="delete")
    writer._write_group(jobs)
    assert not any(j.committed for j in jobs)  # nothing half-done: no record renamed into place
    assert not (tmp_path / "results" / "s").exists() or not list((tmp_path / "results" / "s").iterdir())
    assert not list((tmp_path / "results" / ".writing").iterdir())  # the two written copies were removed
    for job in jobs:
        writer.commit(job)  # one by one, as after any failed group
    assert len(done) == 4 and len(list((tmp_path / "results" / "s").iterdir())) == 4


def test_the_writer_waits_for_a_running_batch_to_commit_it_in_the_same_group(tmp_path):
    import threading

    import edge_infer.commit.writer as writer_module

    jobs = finished_jobs(tmp_path, 4)
    # The bound is not what is tested here: a long one, injected.
    w, _ = make_writer(tmp_path, group_wait_s=5.0)
    state = w._state
    asked = threading.Event()

    class AskedCount(type(state.inferring)):  # type: ignore[misc]
        """The running-batch count, telling the test when the writer looks at it."""

        @property
        def value(self) -> int:
            asked.set()
            return super().value

    state.inferring = AskedCount()
    q = w._finished

    def second_batch_done() -> None:
        asked.wait(5)
        q.put(jobs[2:])  # one put per batch, as the inference threads do
        state.inferring.add(-1)

    state.inferring.add(1)  # a batch is being inferred
    threading.Thread(target=second_batch_done).start()
    q.put(jobs[:2])
    assert writer_module._jobs(q.get()) + w._more(2) == jobs  # both batches: one group commit

    # With no batch running (a lone photo at light load) nothing is waited for.
    q.put(jobs[:1])
    assert writer_module._jobs(q.get()) + w._more(1) == jobs[:1]
