"""Claims (edge_infer/sources/claims.py): the claimed name keeps the inbox path it came from, a claim takes
exactly the file that is at the path, and what cannot be claimed is processed in place."""
from __future__ import annotations

import os
from pathlib import Path

from edge_infer.commit.inflight import input_key
from edge_infer.pipeline.input_file import still_there
from edge_infer.sources.claims import Claims, decode, encode


def test_a_claimed_name_gives_back_the_path_it_came_from():
    for rel in ("a.jpg", "sub/dir/b.jpg", "50%/x%2F.jpg", "-a-b-", "é/中.png", "a\nb.jpg"):
        assert decode(encode(12345, rel)) == rel
        assert "/" not in encode(12345, rel)
    assert decode("notours.jpg") is None and decode("12-") is None


def test_a_claim_takes_the_file_at_the_path_and_frees_the_path(tmp_path):
    inbox = tmp_path / "in"
    (inbox / "sub").mkdir(parents=True)
    claims = Claims(inbox)
    claims.prepare()
    (inbox / "sub" / "a.jpg").write_bytes(b"old")
    ino = os.lstat(inbox / "sub" / "a.jpg").st_ino
    taken = claims.claim(str(inbox / "sub" / "a.jpg"), "sub/a.jpg")
    assert taken is not None and Path(taken).read_bytes() == b"old" and os.lstat(taken).st_ino == ino
    assert not (inbox / "sub" / "a.jpg").exists()  # a newer file may come to the path: it is a new input
    assert claims.claim(str(inbox / "sub" / "a.jpg"), "sub/a.jpg") is None  # nothing there: nothing taken
    assert claims.left() == [(taken, "sub/a.jpg")]  # what a restart finishes first


def test_what_cannot_be_claimed_is_processed_in_place(tmp_path):
    inbox = tmp_path / "in"
    inbox.mkdir()
    claims = Claims(inbox)
    claims.prepare()
    os.mkfifo(inbox / "fifo")
    assert claims.claim(str(inbox / "fifo"), "fifo") == str(inbox / "fifo")  # refused later, with a record
    long = "x" * 250 + ".jpg"  # the inode before it would pass NAME_MAX
    (inbox / long).write_bytes(b"y")
    assert claims.claim(str(inbox / long), long) == str(inbox / long)


def test_an_input_in_place_is_acknowledged_only_while_its_path_names_the_file_that_was_read(tmp_path):
    p = tmp_path / "latest.jpg"
    p.write_bytes(b"v1")
    read = input_key(os.stat(p))
    assert still_there(p, read)
    (tmp_path / "v2").write_bytes(b"v2")
    os.rename(tmp_path / "v2", p)  # a newer version renamed over it
    assert not still_there(p, read)
    assert still_there(p, None)  # never opened: what is there is what was refused
