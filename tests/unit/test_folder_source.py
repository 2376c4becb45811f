"""The folder source's hand-over: a completed file goes to the workers from the observer's own thread (one
thread wake-up less per photo); a full queue leaves it to the source's thread."""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Iterator

from edge_infer.config import FolderSourceConfig
from edge_infer.pipeline.context import StageContext
from edge_infer.pipeline.jobs import FolderInput
from edge_infer.sources.folder import FolderSource


class RecordingQueue(queue.Queue):  # type: ignore[type-arg]
    """Remembers which thread put each job."""

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self.putters: list[str] = []

    def put(self, item, block=True, timeout=None):  # type: ignore[no-untyped-def]
        super().put(item, block, timeout)
        self.putters.append(threading.current_thread().name)


class IdleThreadSource(FolderSource):
    """The source with its own thread doing nothing: only the observer's hand-over can deliver."""

    def run(self) -> None:
        self._stop.wait()


@contextlib.contextmanager
def running(src: FolderSource) -> Iterator[FolderSource]:
    src.start()
    try:
        yield src
    finally:
        src.stop()
        assert src.join(5)


def _config(tmp_path) -> FolderSourceConfig:  # type: ignore[no-untyped-def]
    return FolderSourceConfig(name="in", path=tmp_path / "in", done_dir=None, failed_dir=tmp_path / "failed",
                              after="delete")


def _rename_in(tmp_path, name: str, data: bytes) -> None:
    """A finished file renamed in: claimed at once (one written in place waits QUIET_S, claims.py)."""
    (tmp_path / f".{name}").write_bytes(data)
    (tmp_path / f".{name}").rename(tmp_path / "in" / name)


def test_a_renamed_in_file_is_handed_over_by_the_observer_thread(tmp_path):
    jobs = RecordingQueue()
    with running(IdleThreadSource(StageContext(jobs=jobs), config=_config(tmp_path))):
        _rename_in(tmp_path, "a.jpg", b"x")
        job: FolderInput = jobs.get(timeout=10)
        assert job.rel == "a.jpg"
        assert jobs.putters and not jobs.putters[0].startswith("source-")


def test_files_completed_while_the_queue_is_full_all_arrive_in_order(tmp_path):
    # The observer's hand-over gives up on a full queue (it must not wait there: it also reads inotify); the
    # files stay ready and the source's thread, or a later hand-over, delivers them once there is room.
    jobs = RecordingQueue(maxsize=1)
    jobs.put(FolderInput(source="in", rel="blocker", path=tmp_path / "blocker"))
    with running(FolderSource(StageContext(jobs=jobs), config=_config(tmp_path))):
        (tmp_path / "in" / "a.jpg").write_bytes(b"x")
        (tmp_path / "in" / "b.jpg").write_bytes(b"x")
        assert jobs.get(timeout=10).rel == "blocker"
        got = [jobs.get(timeout=10).rel, jobs.get(timeout=10).rel]
        assert got == ["a.jpg", "b.jpg"]


def test_a_late_event_for_an_input_already_done_is_not_offered_again(tmp_path):
    # watchdog can report a file twice (a new folder's files are also reported by its walk); when the second
    # report comes after the input was done and moved away, offering it again would fail it as "vanished".
    jobs = RecordingQueue()
    with running(IdleThreadSource(StageContext(jobs=jobs), config=_config(tmp_path))) as src:
        _rename_in(tmp_path, "a.jpg", b"x")
        job = jobs.get(timeout=10)
        job.path.rename(tmp_path / "a.jpg")  # acknowledged (the claimed file): moved to done...
        src.done(job)  # ...then forgotten, in the writer's order
        src.candidate(str(tmp_path / "in" / "a.jpg"), settled=True)  # the late report
        assert jobs.empty()
        _rename_in(tmp_path, "a.jpg", b"y")  # a new file of the same name is a new input
        assert jobs.get(timeout=10).rel == "a.jpg"
