"""The output disk fills up, turns read-only, or loses its folders while the daemon runs: inputs wait in the
inbox (none is failed, none is lost), the block is reported (metric, /readyz, STATUS=, one log line), and
work resumes by itself once the disk is back."""
from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time
from pathlib import Path

from edge_infer.ops.systemd import Notifier
from tests.support.daemon import RunningApp, wait_for, waiting, write_config
from tests.support.fs import files_under, fill, remount
from tests.support.images import write_images


def blocked(run: RunningApp, reason: str) -> float:
    return run.sample("edge_infer_output_blocked", reason=reason)


def status_lines(sock: socket.socket) -> list[str]:
    lines = []
    while True:
        try:
            lines += sock.recv(4096).decode().splitlines()
        except socket.timeout:
            return [line for line in lines if line.startswith("STATUS=")]


def assert_all_ok(root: Path, out: Path, imgs: list[Path]) -> None:
    assert files_under(root / "done") == {p.name for p in imgs}
    for p in imgs:
        r = json.loads((out / "drops" / f"{p.name}.json").read_text())
        assert r["status"] == "ok" and r["input_sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert not files_under(root / "inbox") and not files_under(root / "failed")
    assert not files_under(out / ".writing")  # no temporary file left behind by the failed writes


def test_a_full_output_disk_holds_inputs_reports_and_resumes_by_itself(tmp_path, tmpfs, notify_socket):
    out = tmpfs("out", "2m")
    path, sock = notify_socket
    cfg = write_config(tmp_path, output={"dir": str(out)})
    imgs = write_images(tmp_path / "staging", 12)
    with RunningApp(cfg, notifier=Notifier(path)) as run:
        filler = fill(out)
        for p in imgs:
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: blocked(run, "enospc") == 1, 30, "output_blocked{reason=enospc} 1")
        assert run.get("/readyz")[0] == 503 and run.get("/healthz")[0] == 200
        wait_for(lambda: run.sample("edge_infer_ready") == 0, 5, "edge_infer_ready 0")
        assert any("output blocked (enospc)" in line for line in wait_for(lambda: status_lines(sock), 15,
                                                                            "a STATUS= line"))
        # Nothing acknowledged, nothing failed: every input still waits in the inbox.
        assert waiting(tmp_path / "inbox") == {p.name for p in imgs} and not files_under(tmp_path / "done")
        assert run.sample("edge_infer_images_total", source="drops", outcome="failed") == 0
        filler.unlink()  # space comes back
        wait_for(lambda: len(files_under(tmp_path / "done")) == len(imgs), 60, "all done after space returned")
        wait_for(lambda: run.get("/readyz")[0] == 200, 10, "ready again")
        assert blocked(run, "enospc") == 0
        wait_for(lambda: run.sample("edge_infer_ready") == 1, 5, "edge_infer_ready 1")
        assert run.sample("edge_infer_images_total", source="drops", outcome="ok") == len(imgs)
    assert_all_ok(tmp_path, out, imgs)


def test_a_read_only_output_disk_holds_inputs_and_resumes_when_writable(tmp_path, tmpfs):
    out = tmpfs("out", "16m")
    cfg = write_config(tmp_path, output={"dir": str(out)})
    imgs = write_images(tmp_path / "staging", 8)
    with RunningApp(cfg) as run:
        shutil.copyfile(imgs[0], tmp_path / "inbox" / imgs[0].name)
        wait_for(lambda: files_under(tmp_path / "done") == {imgs[0].name}, what="first input done")
        remount(out, "ro")
        for p in imgs[1:]:
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: blocked(run, "readonly") == 1, 30, "output_blocked{reason=readonly} 1")
        assert run.get("/readyz")[0] == 503
        assert waiting(tmp_path / "inbox") == {p.name for p in imgs[1:]}
        remount(out, "rw")
        wait_for(lambda: len(files_under(tmp_path / "done")) == len(imgs), 60, "all done once writable")
        assert blocked(run, "readonly") == 0 and run.get("/readyz")[0] == 200
        assert run.sample("edge_infer_images_total", source="drops", outcome="failed") == 0
    assert_all_ok(tmp_path, out, imgs)


def test_deleted_output_and_failed_folders_are_recreated_and_a_blocked_one_resumes(tmp_path):
    cfg = write_config(tmp_path)
    imgs = write_images(tmp_path / "staging", 6)
    with RunningApp(cfg) as run:
        shutil.copyfile(imgs[0], tmp_path / "inbox" / imgs[0].name)
        (tmp_path / "inbox" / "bad.jpg").write_bytes(b"not an image")
        wait_for(lambda: len(files_under(tmp_path / "done")) == 1 and (tmp_path / "failed" / "bad.jpg").exists(),
                 what="first ok and first failure")
        shutil.rmtree(tmp_path / "results")
        shutil.rmtree(tmp_path / "failed")
        shutil.copyfile(imgs[1], tmp_path / "inbox" / imgs[1].name)
        (tmp_path / "inbox" / "bad2.jpg").write_bytes(b"not an image either")
        wait_for(lambda: (tmp_path / "results" / "drops" / f"{imgs[1].name}.json").exists()
                 and (tmp_path / "failed" / "bad2.jpg.error.json").exists(), what="folders recreated")
        # A folder that cannot be recreated (a file stands in its way): blocked, then resumed once it is gone.
        shutil.rmtree(tmp_path / "results")
        (tmp_path / "results").write_text("in the way")
        for p in imgs[2:]:
            shutil.copyfile(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: blocked(run, "missing") == 1, 30, "output_blocked{reason=missing} 1")
        assert run.get("/readyz")[0] == 503 and waiting(tmp_path / "inbox") == {p.name for p in imgs[2:]}
        (tmp_path / "results").unlink()
        wait_for(lambda: len(files_under(tmp_path / "done")) == len(imgs), 60, "all done")
        assert blocked(run, "missing") == 0 and run.get("/readyz")[0] == 200
        assert run.sample("edge_infer_images_total", source="drops", outcome="failed") == 2
    for p in imgs[2:]:  # (the earlier results went with the folder removed under the daemon)
        assert json.loads((tmp_path / "results" / "drops" / f"{p.name}.json").read_text())["status"] == "ok"
    assert json.loads((tmp_path / "failed" / "bad2.jpg.error.json").read_text())["error"]["kind"] == "decode"
    assert not files_under(tmp_path / "inbox")
