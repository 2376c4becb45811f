"""An input is its identity, not its name: a file replaced by rename while its older version is in flight,
files that arrive by link, and folders renamed with their inputs in flight each end with exactly one record
for the bytes that were taken, and nothing is moved or deleted unread."""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import RunningApp, wait_for, write_config
from tests.support.fs import files_under
from tests.support.images import write_images

VERSIONS = 300


def _records(root: Path, source: str = "drops") -> list[dict]:
    """Every result and failure record the daemon wrote for ``source``."""
    found = [json.loads(p.read_text()) for p in (root / "results" / source).rglob("*.json")]
    found += [json.loads(p.read_text()) for p in (root / "failed").rglob("*.error.json")]
    return found


def _versions(tmp_path: Path, n: int) -> list[bytes]:
    """``n`` distinct JPEGs: a few pictures, each with its own trailer after the end of the image (decoders
    ignore it), so that every version has its own sha256 at the cost of a few encodes."""
    bases = [p.read_bytes() for p in write_images(tmp_path / "bases", 8, size=(480, 360))]
    return [bases[i % len(bases)] + f"version {i}".encode() for i in range(n)]


def _produce(inbox: Path, staging: Path, versions: list[bytes], seed: int) -> set[str]:
    """An IP camera's ``latest.jpg``: each version written aside, then renamed over the last one at random
    moments, many of them while the daemon holds the one before. Returns the digests of the versions the
    producer itself replaced (still at the path, by inode, just before its successor was renamed in): only
    those may end without a record."""
    rng = random.Random(seed)
    replaced: set[str] = set()
    staging.mkdir(exist_ok=True)
    previous: tuple[int, str] | None = None
    for i, data in enumerate(versions):
        tmp = staging / f"v{i}.jpg"
        tmp.write_bytes(data)
        ino = tmp.stat().st_ino
        if previous is not None:
            try:
                if os.lstat(inbox / "latest.jpg").st_ino == previous[0]:
                    replaced.add(previous[1])
            except FileNotFoundError:
                pass
        os.rename(tmp, inbox / "latest.jpg")
        previous = (ino, hashlib.sha256(data).hexdigest())
        time.sleep(rng.uniform(0.0, 0.02))
    return replaced


@pytest.mark.parametrize("after", ["delete", "move"])
def test_a_file_replaced_by_rename_while_in_flight_is_never_acknowledged_for_the_old_one(tmp_path, after):
    seed = int(os.environ.get("EDGE_INFER_FAULT_SEED", time.time_ns() % 100_000))
    print(f"seed {seed} (EDGE_INFER_FAULT_SEED={seed} repeats these moments)")
    versions = _versions(tmp_path, VERSIONS)
    digests = [hashlib.sha256(v).hexdigest() for v in versions]
    source = {"name": "drops", "type": "folder", "path": "inbox", "after": after, "failed_dir": "failed"}
    if after == "move":
        source["done_dir"] = "done"
    cfg = write_config(tmp_path, [source], pipeline={"workers": 2, "queue_size": 16})
    inbox = tmp_path / "inbox"
    with RunningApp(cfg) as run:
        replaced = _produce(inbox, tmp_path / "staging", versions, seed)
        wait_for(lambda: not files_under(inbox), 60, "the inbox empty")
        wait_for(lambda: run.app.state.in_flight.value == 0, 30, "nothing in flight")
        records = _records(tmp_path)
        counts = {o: run.sample("edge_infer_images_total", source="drops", outcome=o)
                  for o in ("ok", "failed", "duplicate")}
    assert counts["ok"] == len(records), f"{counts}, {len(records)} records on disk: a record overwritten"
    by_digest: dict[str, list[dict]] = {}
    for r in records:
        by_digest.setdefault(r.get("input_sha256"), []).append(r)
    assert not [r for r in records if r["status"] != "ok"], "failure records"
    twice = [d for d, rs in by_digest.items() if len(rs) > 1]
    assert not twice, f"{len(twice)} version(s) with two records"
    lost = [i for i, d in enumerate(digests) if d not in by_digest and d not in replaced]
    assert not lost, (f"{len(lost)} of {VERSIONS} versions left the inbox unread (none replaced by the "
                      f"producer): {lost[:10]}")
    assert digests[-1] in by_digest, "the last version was never classified"
    if after == "move":
        # done/X and results/X.json stay a pair: the file filed under a record is the one it describes.
        for r in records:
            done = tmp_path / "done" / r["stored_as"]
            assert hashlib.sha256(done.read_bytes()).hexdigest() == r["input_sha256"], r["stored_as"]
        assert len(files_under(tmp_path / "done")) == len(records)
    print(f"{len(records)} versions classified, {len(replaced)} replaced by the producer before they were taken")


def _linkat_follow(src: str, dest: Path) -> None:
    """``linkat(AT_FDCWD, src, AT_FDCWD, dest, AT_SYMLINK_FOLLOW)``, the documented way to name an O_TMPFILE
    file (open(2)); ``os.link`` calls plain link(2) there, which links the /proc symlink itself."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, at_symlink_follow = -100, 0x400
    if libc.linkat(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dest), at_symlink_follow) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), src)


def test_arrivals_by_link_are_seen_without_a_restart(tmp_path):
    imgs = write_images(tmp_path / "staging", 3)
    cfg = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    with RunningApp(cfg) as run:
        os.link(imgs[0], inbox / "ln.jpg")  # ln: a new name for a finished file, no write, no close
        subprocess.run(["cp", "-l", str(imgs[1]), str(inbox / "cp-l.jpg")], check=True, timeout=30)
        # A careful producer: an unnamed file written in the folder, named once complete (O_TMPFILE + linkat).
        fd = os.open(inbox, os.O_TMPFILE | os.O_WRONLY, 0o644)
        try:
            os.write(fd, imgs[2].read_bytes())
            _linkat_follow(f"/proc/self/fd/{fd}", inbox / "tmpfile.jpg")
        finally:
            os.close(fd)
        wait_for(lambda: files_under(tmp_path / "done") == {"ln.jpg", "cp-l.jpg", "tmpfile.jpg"}, 20,
                 "the three linked files processed")
        assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == 3
    for name, img in zip(["ln.jpg", "cp-l.jpg", "tmpfile.jpg"], imgs):
        record = json.loads((tmp_path / "results" / "drops" / f"{name}.json").read_text())
        assert record["input_sha256"] == hashlib.sha256(img.read_bytes()).hexdigest()


def test_folders_renamed_with_inputs_in_flight_give_one_record_each(tmp_path):
    folders, per_folder = 5, 40
    staging = tmp_path / "staging"
    sha: dict[str, str] = {}
    imgs = write_images(tmp_path / "bases", 8, size=(480, 360))
    for f in range(folders):
        (staging / f"f{f}").mkdir(parents=True)
        for i in range(per_folder):
            data = imgs[i % len(imgs)].read_bytes() + f"{f}/{i}".encode()
            (staging / f"f{f}" / f"p{i:02d}.jpg").write_bytes(data)
            sha[hashlib.sha256(data).hexdigest()] = f"f{f}/p{i:02d}.jpg"
    source = {"name": "drops", "type": "folder", "path": "inbox", "after": "move", "done_dir": "done",
              "failed_dir": "failed", "recursive": True}
    cfg = write_config(tmp_path, [source], pipeline={"workers": 2, "queue_size": 16})
    inbox = tmp_path / "inbox"
    with RunningApp(cfg) as run:
        for f in range(folders):
            os.rename(staging / f"f{f}", inbox / f"f{f}")
        time.sleep(0.3)  # some of each folder taken, most still waiting
        for f in range(folders):
            os.rename(inbox / f"f{f}", inbox / f"renamed{f}")
        wait_for(lambda: not files_under(inbox), 60, "the inbox empty")
        wait_for(lambda: run.app.state.in_flight.value == 0, 30, "nothing in flight")
        assert run.sample("edge_infer_images_total", source="drops", outcome="failed") == 0
    records = _records(tmp_path)
    assert not [r for r in records if r["status"] != "ok"], "failure records"
    digests = [r["input_sha256"] for r in records]
    assert sorted(digests) == sorted(sha), (f"{len(digests)} records for {len(sha)} photos; "
                                            f"{len(digests) - len(set(digests))} twice")
    for r in records:  # each record's input is in done/ under its name, with its bytes
        done = tmp_path / "done" / r["stored_as"]
        assert hashlib.sha256(done.read_bytes()).hexdigest() == r["input_sha256"], r["stored_as"]


def test_a_producer_that_touches_its_file_right_after_closing_it_still_finds_it(tmp_path):
    """GNU mv across file systems sets the copy's attributes by path after closing it, and Python's
    shutil.copy its mode: a file written in place is claimed only once it has been still for QUIET_S."""
    imgs = write_images(tmp_path / "staging", 4)
    cfg = write_config(tmp_path)
    inbox = tmp_path / "inbox"
    with RunningApp(cfg) as run:
        for i in range(60):
            dest = inbox / f"p{i:02d}.jpg"
            dest.write_bytes(imgs[i % 4].read_bytes() + str(i).encode())
            time.sleep(0.01)  # a producer busy for a moment after the close (mv copying xattrs)
            os.chmod(dest, 0o640)  # by path, after the close: must still be there
            os.utime(dest)
        wait_for(lambda: len(files_under(tmp_path / "done")) == 60, 60, "all 60 done")
        assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == 60
