"""The in-flight journal on its own: strikes counted at unclean exits only, forgiven by a commit or a clean
exit, a torn last line ignored, and the file kept small."""
from __future__ import annotations

import os

import pytest

from edge_infer.commit.inflight import InflightJournal
from edge_infer.errors import InputError

A, B = (1, 2, 3, 4), (1, 5, 6, 7)


def run(path, started=(), committed=(), clean=True, strikes=2):
    """One daemon run: open, start and commit some inputs, then exit cleanly or die (no close)."""
    j = InflightJournal(path, strikes=strikes)
    j.open()
    for key in started:
        j.check(key)
        j.started(key, "drops", f"{key[1]}.jpg")
    for key in committed:
        j.committed(key)
    if clean:
        j.close()
    return j


def test_one_unclean_exit_quarantines_nothing(tmp_path):
    path = tmp_path / "j"
    run(path, started=[A], clean=False)  # the daemon died while A was in flight
    j = run(path, clean=False)
    assert not j.quarantined


def test_in_flight_at_two_unclean_exits_in_a_row_is_quarantined(tmp_path):
    path = tmp_path / "j"
    run(path, started=[A, B], committed=[B], clean=False)
    run(path, started=[A], clean=False)
    j = InflightJournal(path)
    j.open()
    assert j.quarantined == {A}
    with pytest.raises(InputError) as e:
        j.check(A)
    assert e.value.kind == "crashed" and "move it back" in e.value.message
    j.check(B)  # committed in the first run: never held against it


def test_a_commit_or_a_clean_exit_forgives(tmp_path):
    path = tmp_path / "j"
    run(path, started=[A], clean=False)
    run(path, started=[A], committed=[A], clean=False)  # A made it through: its strike is gone
    assert not run(path, clean=False).quarantined
    run(path, started=[B], clean=False)
    run(path, clean=True)  # a clean run in between
    run(path, started=[B], clean=False)
    assert not run(path, clean=False).quarantined


def test_a_death_it_was_not_in_flight_at_forgives_its_strike(tmp_path):
    path = tmp_path / "j"
    run(path, started=[A], clean=False)
    run(path, started=[B], clean=False)  # died again, but with A not in flight: not "in a row"
    run(path, started=[A], clean=False)
    assert not run(path, clean=False).quarantined


def test_a_quarantined_input_once_failed_is_released(tmp_path):
    path = tmp_path / "j"
    run(path, started=[A], clean=False)
    run(path, started=[A], clean=False)
    j = InflightJournal(path)
    j.open()
    assert A in j.quarantined
    j.committed(A)  # its failure record is written: moved back into the inbox, it is tried again
    j.check(A)
    j.close()
    j2 = InflightJournal(path)
    j2.open()
    assert not j2.quarantined


def test_a_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "j"
    run(path, started=[A], clean=False)
    with open(path, "ab") as f:
        f.write(b'{"op":"start","k":[9,9')  # killed mid-write
    run(path, started=[A], clean=False)
    j = InflightJournal(path)
    j.open()
    assert j.quarantined == {A}


def test_the_journal_is_compacted(tmp_path):
    path = tmp_path / "j"
    j = InflightJournal(path, compact_bytes=4096)
    j.open()
    for i in range(500):
        key = (1, i, 3, 4)
        j.started(key, "drops", f"{i}.jpg")
        j.committed(key)
    assert os.path.getsize(path) < 4096 + 200
    j.started(A, "drops", "a.jpg")
    del j  # died with A in flight
    assert run(path, started=[A], clean=False) is not None  # and again
    j = InflightJournal(path)
    j.open()
    assert j.quarantined == {A}


def test_an_unwritable_journal_does_not_stop_the_start(tmp_path):
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents[:2]:  # pytest's base folders are root's own (0700)
        parent.chmod(0o755)
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child: as the service's user, where root would write anyway
        try:
            os.setuid(65534)
            j = InflightJournal(folder / "j")
            j.open()
            j.started(A, "drops", "a.jpg")
            j.committed(A)
            j.close()
            os.write(w, b"started")
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        assert f.read() == "started"
