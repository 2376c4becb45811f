"""kill -9 at random moments during bursts of photos (and the start-up scan of what the last kill left),
several times in a row, then a normal restart: every input ends with exactly one result, a result once
written is never rewritten (byte for byte), identical inputs get identical predictions, no temporary file
is left or read, and the inbox ends empty."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import time
from pathlib import Path

from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.fs import files_under
from tests.support.images import write_images
from tests.support.metrics import metric

DISTINCT, COPIES, KILLS = 120, 3, 4


def results(out: Path) -> dict[str, bytes]:
    base = out / "drops"
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*.json")} if base.exists() else {}


def test_kill_9_at_random_moments_then_a_restart_loses_nothing_and_rewrites_nothing(tmp_path):
    seed = int(os.environ.get("EDGE_INFER_FAULT_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    print(f"seed {seed} (EDGE_INFER_FAULT_SEED={seed} repeats these kill moments)")
    port = free_port()
    cfg = write_config(tmp_path, metrics={"port": port}, pipeline={"workers": 2, "queue_size": 16})
    staging = tmp_path / "staging"
    sha: dict[str, str] = {}
    for i, p in enumerate(write_images(staging, DISTINCT, size=(640, 480))):
        for c in range(COPIES):  # the same bytes under several names
            name = f"c{c}_{p.name}"
            os.link(p, staging / name)
            sha[name] = hashlib.sha256(p.read_bytes()).hexdigest()
        p.unlink()
    inbox, out = tmp_path / "inbox", tmp_path / "results"
    names = sorted(sha)
    seen: dict[str, bytes] = {}  # every result seen after a kill, which must never change afterwards
    for round_ in range(KILLS + 1):
        with daemon(cfg, log=tmp_path / "daemon.log") as proc:
            wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
            for name in names[round_::KILLS + 1]:  # this round's burst, renamed in at once
                os.rename(staging / name, inbox / name)
            if round_ < KILLS:
                time.sleep(rng.uniform(0.05, 0.5))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            else:
                wait_for(lambda: not files_under(inbox), 120, "the inbox empty")
                print("duplicates acknowledged without recomputing:",
                      metric(port, 'edge_infer_images_total{outcome="duplicate",source="drops"}'))
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0
        now = results(out)
        for rel, data in seen.items():
            assert now.get(rel) == data, f"{rel}: a committed result was rewritten or lost after a kill"
        seen.update(now)
        # A kill between "result written" and "input acknowledged" is a window of microseconds that random
        # kills hit only now and then; make it certain: a few finished inputs come back, as if unacknowledged.
        for name in sorted(files_under(tmp_path / "done"))[:5] if round_ < KILLS else []:
            shutil.copy(tmp_path / "done" / name, staging / name)
            os.rename(staging / name, inbox / name)
        print(f"round {round_}: {len(now)} results, {len(files_under(inbox))} in the inbox")
    assert files_under(tmp_path / "done") == set(sha)
    assert not files_under(inbox) and not files_under(tmp_path / "failed")
    assert set(results(out)) == {f"{n}.json" for n in sha}  # exactly one result each, nothing else
    assert not files_under(out / ".writing") and not [p for p in out.rglob("*.tmp") if p.is_file()]
    by_content: dict[str, list[dict]] = {}
    for name, digest in sha.items():
        r = json.loads((out / "drops" / f"{name}.json").read_text())
        assert r["status"] == "ok" and r["input"] == name and r["input_sha256"] == digest
        by_content.setdefault(digest, []).append(r)
    for same in by_content.values():  # identical bytes: identical predictions and sizes
        assert all((r["predictions"], r["image"]) == (same[0]["predictions"], same[0]["image"]) for r in same)
