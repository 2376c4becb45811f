"""Names near NAME_MAX (255 bytes) in two-byte and three-byte UTF-8: where a name is cut to take a
suffix (``.json``, ``.error.json``, ``~<hex>``), it is cut between characters, so that every name
the daemon makes and every record's ``stored_as`` is still UTF-8; each input has one record."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.images import write_images
from tests.support.metrics import metric

# 255 bytes: the name fits; with ".json" (233 bytes kept), ".error.json" (227) or "~<8 hex>" (241)
# it is cut where no character ends. 253 bytes: 233, 227 and 242 fall inside a character too.
TWO_BYTE = "é" * 125 + ".jpeg"
THREE_BYTE = "中" * 83 + ".jpg"


def _check_utf8_names(folder: Path) -> None:
    """Every name under ``folder``, decoded strictly: a name that is not UTF-8 fails here."""
    for _, dirnames, filenames in os.walk(os.fsencode(folder)):
        for raw in (*dirnames, *filenames):
            assert len(raw) <= 255
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise AssertionError(f"a name in {folder} is not UTF-8: {raw!r}") from None


def _count(port: int, outcome: str) -> float:
    return metric(port, f'edge_infer_images_total{{outcome="{outcome}",source="drops"}}')


def test_long_multibyte_names_are_cut_between_characters_and_keep_one_record_each(tmp_path):
    photos = [p.read_bytes() for p in write_images(tmp_path / "photos", 4)]
    broken = [b"not an image %d" % i for i in range(4)]
    port = free_port()
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    staging.mkdir()
    cfg = write_config(tmp_path, metrics={"port": port})
    done = {"ok": 0, "failed": 0}
    with daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        # Each name twice with a photo, twice with broken bytes: the second of each takes a suffix.
        for i, name in enumerate((TWO_BYTE, THREE_BYTE)):
            for data, outcome in ((photos[2 * i], "ok"), (photos[2 * i + 1], "ok"),
                                  (broken[2 * i], "failed"), (broken[2 * i + 1], "failed")):
                (staging / name).write_bytes(data)
                os.rename(staging / name, inbox / name)
                done[outcome] += 1
                wait_for(lambda: _count(port, outcome) == done[outcome] and not files_under(inbox),
                         60, f"{outcome} {done[outcome]}")
        proc.terminate()
        assert proc.wait(30) == 0
    for folder in ("done", "failed", "results"):
        _check_utf8_names(tmp_path / folder)
    records = [json.loads(p.read_bytes()) for p in (tmp_path / "results" / "drops").iterdir()]
    records += [json.loads(p.read_bytes()) for p in (tmp_path / "failed").iterdir()
                if p.name.endswith(".error.json")]
    shas = {hashlib.sha256(data).hexdigest() for data in (*photos, *broken)}
    assert sorted(r["input_sha256"] for r in records) == sorted(shas), "one record per input"
    for r in records:
        assert r["input"] in (TWO_BYTE, THREE_BYTE)
        stored = r["stored_as"]
        stored.encode("utf-8")  # a lone surrogate (a byte cut off its character) raises here
        held = (tmp_path / ("done" if r["status"] == "ok" else "failed") / stored).read_bytes()
        assert hashlib.sha256(held).hexdigest() == r["input_sha256"]
