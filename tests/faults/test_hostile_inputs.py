"""Hostile and broken files thrown at a real daemon (a subprocess, its decoders sandboxed processes): each
ends as exactly one record, the daemon's whole process tree stays within its budget, Ghostscript is never
run, and no library exception becomes an ``internal`` failure."""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

from edge_infer.tools.procfs import tree_pss_mb
from tests.support.corpus import build_corpus
from tests.support.daemon import daemon, free_port, http_status, wait_for, write_config
from tests.support.decode_memory import CASES, write_case
from tests.support.images import write_images
from tests.support.ticker import Ticker

# The daemon (~120 MB), its forkserver and two decoders, one of which may hold a 7000x7000 picture being
# converted band by band (~70-210 MB): far below the 2 GB one such file cost when decoded in the daemon.
TREE_BUDGET_MB = 600
POSTSCRIPT = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\nshowpage\n%%EOF\n"


def records(root: Path) -> dict[str, dict]:
    """Every record the daemon wrote: input name -> its result or failure record."""
    out = {}
    for p in (root / "results" / "drops").rglob("*.json") if (root / "results" / "drops").exists() else ():
        out[p.relative_to(root / "results" / "drops").as_posix()[:-5]] = json.loads(p.read_text())
    for p in (root / "failed").rglob("*.error.json") if (root / "failed").exists() else ():
        out[p.relative_to(root / "failed").as_posix()[:-11]] = json.loads(p.read_text())
    return out


class PeakPss(Ticker):
    """Samples the PSS of a process tree every 20 ms; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        super().__init__()
        self.pid, self.peak = pid, 0.0

    def tick(self) -> None:
        self.peak = max(self.peak, tree_pss_mb(self.pid))


def test_small_files_that_expand_to_huge_images_keep_the_tree_within_budget(tmp_path):
    port = free_port()
    cfg = write_config(tmp_path, metrics={"port": port})
    staging = tmp_path / "staging"
    staging.mkdir()
    bombs = [write_case(name, staging) for name in CASES]
    bombs += write_images(staging, 4, size=(640, 480))  # and photos among them
    with daemon(cfg, log=tmp_path / "daemon.log") as proc:
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        with PeakPss(proc.pid) as pss:
            for p in bombs:
                os.rename(p, tmp_path / "inbox" / p.name)
            wait_for(lambda: len(records(tmp_path)) == len(bombs), 180, "a record for each")
    got = records(tmp_path)
    assert sorted(got) == sorted(p.name for p in bombs)
    assert all(r["status"] == "ok" or r["error"]["kind"] in ("too_large", "decode") for r in got.values()), got
    print(f"peak PSS of the daemon's tree: {pss.peak:.0f} MB; outcomes "
          f"{Counter(r['status'] if r['status'] == 'ok' else r['error']['kind'] for r in got.values())}")
    assert 0 < pss.peak < TREE_BUDGET_MB


def test_the_corpus_and_postscript_each_end_as_one_record_and_never_run_a_program(tmp_path):
    bin_dir, marker = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    (bin_dir / "gs").write_text(f'#!/bin/sh\ntouch "{marker}"\nexit 1\n')
    (bin_dir / "gs").chmod(0o755)
    port = free_port()
    cfg = write_config(tmp_path, metrics={"port": port})
    corpus = build_corpus(tmp_path / "corpus", seed=7)
    (tmp_path / "corpus" / "x.jpg").write_bytes(POSTSCRIPT)
    corpus.append(tmp_path / "corpus" / "x.jpg")
    names = {}
    for i, p in enumerate(corpus):  # flat and unique names in the inbox
        names[p] = f"{i:04d}_{p.name}"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    with daemon(cfg, env_extra=env, log=tmp_path / "daemon.log"):
        wait_for(lambda: http_status(port, "/readyz") == 200, 60, "ready")
        staging = tmp_path / "staging"
        staging.mkdir()
        for p, name in names.items():
            shutil.copy(p, staging / name)
            os.rename(staging / name, tmp_path / "inbox" / name)
        wait_for(lambda: len(records(tmp_path)) == len(names), 300, "a record for each corpus file")
    got = records(tmp_path)
    kinds = Counter(r["status"] if r["status"] == "ok" else r["error"]["kind"] for r in got.values())
    print(f"{len(got)} files: {dict(kinds)}")
    assert sorted(got) == sorted(names.values())
    assert set(kinds) <= {"ok", "decode", "unsupported", "too_large"}, kinds  # never internal or crashed
    ps = got[names[tmp_path / "corpus" / "x.jpg"]]
    assert ps["error"]["kind"] == "unsupported" and "PostScript" in ps["error"]["message"], ps
    assert not marker.exists(), "Ghostscript was run"
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log and "internal" not in log
