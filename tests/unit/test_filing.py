"""Never overwrite: the names an input and its record are filed under, and moves that never replace."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from edge_infer.pipeline.jobs import FolderInput
from edge_infer.sinks import durable, filing
from edge_infer.sinks.durable import NAME_MAX, move_file, rename_noreplace
from edge_infer.sinks.durable import record_name
from edge_infer.sinks.filing import choose, names, suffixed
from tests.support.images import write_images
from tests.support.writer import make_worker, make_writer


def test_the_suffix_goes_before_the_extension_and_always_fits_a_file_name():
    assert suffixed("IMG_0001.JPG", "1a2b3c4d") == "IMG_0001~1a2b3c4d.JPG"
    assert suffixed("sub/dir.x/scan", "1a2b3c4d") == "sub/dir.x/scan~1a2b3c4d"
    assert suffixed("photo.tar.gz", "ab") == "photo.tar~ab.gz"
    assert suffixed("notes.final-version", "ab") == "notes.final-version~ab"  # not an extension: too long
    long = "é" * 124 + ".jpg"  # 252 bytes: no room for 9 more
    cut = suffixed(long, "1a2b3c4d")
    assert len(os.fsencode(cut)) <= NAME_MAX and cut.endswith("~1a2b3c4d.jpg") and cut.startswith("é" * 100)
    sha = "1a2b3c4d" + "e" * 56
    assert list(names("a.jpg", sha))[:5] == ["a.jpg", "a~1a2b3c4d.jpg", f"a~{sha[:16]}.jpg", f"a~{sha}.jpg",
                                             f"a~{sha}-2.jpg"]
    assert list(names("a.jpg", None))[:3] == ["a.jpg", "a~2.jpg", "a~3.jpg"]  # bytes never read


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-fallback"])
def test_a_move_never_replaces_what_is_there(tmp_path, monkeypatch, renameat2):
    if not renameat2:
        monkeypatch.setattr(durable, "_renameat2", False)
    (tmp_path / "a").write_bytes(b"new")
    (tmp_path / "b").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        rename_noreplace(tmp_path / "a", tmp_path / "b")
    with pytest.raises(FileExistsError):
        move_file(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == b"new" and (tmp_path / "b").read_bytes() == b"old"
    os.symlink("/nowhere", tmp_path / "link")
    move_file(tmp_path / "link", tmp_path / "sub" / "link")  # a link moves as a link
    assert os.readlink(tmp_path / "sub" / "link") == "/nowhere" and not os.path.lexists(tmp_path / "link")


def test_a_move_across_file_systems_never_replaces_and_never_shows_a_partial_file(tmp_path):
    other = "/dev/shm"
    if not os.path.isdir(other) or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test's folder")
    dest_dir = os.path.join(other, f"edge-infer-test-{os.getpid()}")
    os.makedirs(dest_dir)
    try:
        (tmp_path / "a").write_bytes(b"new")
        with open(os.path.join(dest_dir, "b"), "wb") as f:
            f.write(b"old")
        with pytest.raises(FileExistsError):
            move_file(tmp_path / "a", durable.Path(dest_dir) / "b")
        assert (tmp_path / "a").read_bytes() == b"new" and open(os.path.join(dest_dir, "b"), "rb").read() == b"old"
        move_file(tmp_path / "a", durable.Path(dest_dir) / "c")
        assert sorted(os.listdir(dest_dir)) == ["b", "c"] and not (tmp_path / "a").exists()  # no temporary left
    finally:
        for name in os.listdir(dest_dir):
            os.unlink(os.path.join(dest_dir, name))
        os.rmdir(dest_dir)


def _drop(tmp_path, data: bytes, rel="IMG_0001.JPG", writer_args=None, commit=True):
    """``rel`` with these bytes, through a worker and the writer."""
    path = tmp_path / "inbox" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    job = FolderInput("s", rel, path)
    make_worker(tmp_path).process(job)
    if job.error is None:
        job.predictions = [{"index": 1, "label": "x", "score": 1.0}]
    writer, _ = make_writer(tmp_path, **(writer_args or {}))
    if commit:
        writer.commit(job)
    return job, writer


def _listed(folder):
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))  # not the temporary folder


def _photos(tmp_path, n):
    return [p.read_bytes() for p in write_images(tmp_path / "staging", n)]


def test_the_same_name_with_other_bytes_is_filed_beside_the_first_and_the_same_bytes_are_a_duplicate(tmp_path):
    a, b = _photos(tmp_path, 2)
    _drop(tmp_path, a)
    job, _ = _drop(tmp_path, b)
    tag = hashlib.sha256(b).hexdigest()[:8]
    assert job.stored_as == f"IMG_0001~{tag}.JPG" and not job.duplicate
    assert (tmp_path / "done" / "IMG_0001.JPG").read_bytes() == a
    assert (tmp_path / "done" / f"IMG_0001~{tag}.JPG").read_bytes() == b
    first = json.loads((tmp_path / "results" / "s" / "IMG_0001.JPG.json").read_text())
    second = json.loads((tmp_path / "results" / "s" / f"IMG_0001~{tag}.JPG.json").read_text())
    assert (first["input"], first["stored_as"], first["input_sha256"]) == ("IMG_0001.JPG", "IMG_0001.JPG",
                                                                           hashlib.sha256(a).hexdigest())
    assert (second["input"], second["stored_as"], second["input_sha256"]) == ("IMG_0001.JPG", job.stored_as,
                                                                              hashlib.sha256(b).hexdigest())
    for data, stored in ((a, "IMG_0001.JPG"), (b, job.stored_as)):  # again: recognised, under either name
        again, _ = _drop(tmp_path, data)
        assert again.duplicate and again.stored_as == stored and not (tmp_path / "inbox" / "IMG_0001.JPG").exists()
    assert sorted(os.listdir(tmp_path / "done")) == sorted(["IMG_0001.JPG", job.stored_as])
    assert len(os.listdir(tmp_path / "results" / "s")) == 2


def test_a_crash_between_the_suffixed_result_and_the_move_is_a_duplicate_at_the_restart(tmp_path):
    a, b = _photos(tmp_path, 2)
    _drop(tmp_path, a)
    job, writer = _drop(tmp_path, b, commit=False)
    writer._write_records([job])  # durable; then the crash: the input is still in the inbox
    assert (tmp_path / "inbox" / "IMG_0001.JPG").read_bytes() == b
    again = FolderInput("s", "IMG_0001.JPG", tmp_path / "inbox" / "IMG_0001.JPG")
    make_worker(tmp_path).process(again)  # the next start
    assert again.duplicate and again.stored_as == job.stored_as
    make_writer(tmp_path)[0].commit(again)
    assert (tmp_path / "done" / job.stored_as).read_bytes() == b and len(os.listdir(tmp_path / "results" / "s")) == 2


def test_two_broken_files_of_one_name_keep_both_files_and_both_records(tmp_path):
    _drop(tmp_path, b"not an image, one")
    job, _ = _drop(tmp_path, b"not an image, two")
    assert job.error is not None and job.stored_as and job.stored_as != "IMG_0001.JPG"
    failed = tmp_path / "failed"
    assert _listed(failed) == sorted(["IMG_0001.JPG", "IMG_0001.JPG.error.json", job.stored_as,
                                                 f"{job.stored_as}.error.json"])
    assert (failed / "IMG_0001.JPG").read_bytes() == b"not an image, one"
    assert (failed / job.stored_as).read_bytes() == b"not an image, two"
    record = json.loads((failed / f"{job.stored_as}.error.json").read_text())
    assert record["input"] == "IMG_0001.JPG" and record["stored_as"] == job.stored_as


def test_an_ok_result_keeps_the_failure_record_of_other_bytes_of_its_name(tmp_path):
    """The writer used to remove ``<failed>/<rel>.error.json`` at every ok result (for an interrupted earlier
    attempt): the record of a different file of the same name, whose file stays in failed/."""
    (a,) = _photos(tmp_path, 1)
    _drop(tmp_path, b"broken")
    _drop(tmp_path, a)
    assert json.loads((tmp_path / "failed" / "IMG_0001.JPG.error.json").read_text())["status"] == "failed"
    assert (tmp_path / "done" / "IMG_0001.JPG").read_bytes() == a


def test_a_failure_of_unread_bytes_keeps_its_record_after_an_interrupted_attempt(tmp_path):
    """Too large to be read: no digest. A restart between its record and its move finds that
    record and keeps it as it is (a record once written never changes); the input joins it."""
    _drop(tmp_path, b"x" * 200, rel="big.jpg")  # read: decode error, in failed/
    path = tmp_path / "inbox" / "big.jpg"
    path.write_bytes(b"y" * 20_000_000)  # over make_worker's 10 MB: too_large, never read
    job = FolderInput("s", "big.jpg", path)
    make_worker(tmp_path).process(job)
    assert job.error.kind == "too_large" and job.sha256 is None
    make_writer(tmp_path)[0]._write_records([job])  # then the crash
    written = (tmp_path / "failed" / "big~2.jpg.error.json").read_bytes()
    again = FolderInput("s", "big.jpg", path)
    make_worker(tmp_path).process(again)
    make_writer(tmp_path)[0].commit(again)
    assert again.stored_as == job.stored_as == "big~2.jpg"
    assert (tmp_path / "failed" / "big~2.jpg.error.json").read_bytes() == written
    assert _listed(tmp_path / "failed") == ["big.jpg", "big.jpg.error.json", "big~2.jpg",
                                                       "big~2.jpg.error.json"]


@pytest.mark.parametrize("after", ["delete", "keep"])
def test_without_a_move_the_results_of_both_are_kept(tmp_path, after):
    a, b = _photos(tmp_path, 2)
    _drop(tmp_path, a, writer_args={"after": after})
    job, _ = _drop(tmp_path, b, writer_args={"after": after})
    assert job.stored_as != "IMG_0001.JPG"
    results = {json.loads(p.read_text())["input_sha256"] for p in (tmp_path / "results" / "s").iterdir()}
    assert results == {hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest()}


@pytest.mark.parametrize("char", ["é", "中", "😀"])
def test_a_long_name_is_cut_between_characters(char):
    for n in range(200 // len(char.encode()), 255 // len(char.encode()) + 1):  # every cut position
        name = char * n
        for cut in (suffixed(name + ".jpg", "1a2b3c4d"), record_name(name + ".jpg", ".json"),
                    record_name(name + ".jpg", ".error.json")):
            raw = os.fsencode(cut)
            assert len(raw) <= NAME_MAX and raw.decode("utf-8") == cut, (n, raw[-20:])
    not_utf8 = os.fsdecode(b"\xff" * 250 + b".jpg")  # undecodable bytes are kept, one each
    assert os.fsencode(suffixed(not_utf8, "ab")) == b"\xff" * (NAME_MAX - 7) + b"~ab.jpg"


def test_in_the_failed_folder_a_record_name_is_never_an_inputs(tmp_path):
    """A failure record moved back into the inbox is an input that fails; filed under its own
    name, it would lie where its first input's next failure record goes."""
    failed = tmp_path / "failed"
    src = tmp_path / "scan.jpg.error.json"
    src.write_bytes(b"{}")
    name = choose("scan.jpg.error.json", "ab" * 32, lambda n: durable.error_path(failed, n), src,
                  failed, "unsupported")
    assert name == "scan.jpg.error~abababab.json"
    failed.mkdir()
    (failed / "scan.jpg.error~2.json").write_bytes(b"other")  # the chosen name, taken meanwhile
    moved = filing.file_input(src, failed, "scan.jpg.error~2.json", "scan.jpg.error.json", None)
    assert moved.name == "scan.jpg.error~3.json", "the next name, never the record's"
    assert choose("a.error.json", None, lambda n: tmp_path / "results" / f"{n}.json", None, None) \
        == "a.error.json", "results and done/ hold no failure records: the name is free there"


def test_two_inputs_of_one_name_in_one_group_get_two_names_and_two_records(tmp_path):
    """Two versions of one name in flight at once (a file replaced while the first was queued) are
    committed in one group: the second's record must not replace the first's."""
    a, b = _photos(tmp_path, 2)
    first, _ = _drop(tmp_path, a, commit=False)
    first.path.rename(tmp_path / "claimed-a")
    first.path = tmp_path / "claimed-a"
    second, writer = _drop(tmp_path, b, commit=False)
    writer._write_records([first, second])
    for job in (first, second):
        writer.commit(job)
    assert first.stored_as != second.stored_as
    results = [json.loads(p.read_text()) for p in (tmp_path / "results" / "s").iterdir()]
    shas = sorted(hashlib.sha256(x).hexdigest() for x in (a, b))
    assert sorted(r["input_sha256"] for r in results) == shas
    assert (tmp_path / "done" / first.stored_as).read_bytes() == a
    assert (tmp_path / "done" / second.stored_as).read_bytes() == b


def test_only_a_record_of_the_same_input_and_bytes_is_taken_as_its_own(tmp_path):
    from edge_infer.commit.record_names import adopt

    path = tmp_path / "x.jpg.error.json"
    path.write_text(json.dumps({"input": "x.jpg", "input_sha256": "a" * 64, "status": "failed"}))
    for rel, sha in (("y.jpg", "a" * 64), ("x.jpg", "b" * 64), ("x.jpg", None)):
        job = FolderInput("s", rel, tmp_path / rel, sha256=sha)
        assert not adopt(job, path) and not job.committed
    job = FolderInput("s", "x.jpg", tmp_path / "x.jpg", sha256="a" * 64)
    assert adopt(job, path) and job.committed and job.record["input_sha256"] == "a" * 64
