"""The one-shot commands as a user runs them: real subprocesses, JSON on stdout, exit codes."""
from __future__ import annotations

import json
import shutil

from edge_infer.classifier.manifest import default_model_path, sha256_file
from tests.support.cli import run_cli
from tests.support.images import write_images
from tests.support.paths import SAMPLES


def test_info_describes_the_embedded_model():
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["model"]["path"] == str(default_model_path())
    assert d["model"]["sha256"] == sha256_file(default_model_path())
    assert d["model"]["precision"] == "int8" and d["model"]["manifest"]["name"] == "mobilenet_v2"
    assert d["onnxruntime"]["version"] and "CPUExecutionProvider" in d["onnxruntime"]["providers"]


def test_classify_prints_a_line_per_input_and_exits_1_when_some_fail(tmp_path):
    imgs = write_images(tmp_path / "in" / "sub", 3)
    (tmp_path / "in" / "broken.jpg").write_text("nope")
    (tmp_path / "in" / ".hidden.jpg").write_text("skipped")
    r = run_cli("classify", "--top-k", "2", str(tmp_path / "in"), str(tmp_path / "missing.jpg"))
    assert r.returncode == 1, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 5
    by_name = {row["input"].replace(str(tmp_path) + "/", ""): row for row in rows}
    assert by_name["in/broken.jpg"]["status"] == "failed" and by_name["in/broken.jpg"]["error"]["kind"] == "decode"
    assert by_name["missing.jpg"]["error"]["kind"] == "io"
    for p in imgs:
        row = by_name[f"in/sub/{p.name}"]
        assert row["status"] == "ok" and len(row["predictions"]) == 2
        assert row["predictions"][0]["score"] >= row["predictions"][1]["score"]
    assert r.stderr == ""  # no progress bar when stderr is not a terminal


def test_classify_real_photos(tmp_path, shared):
    for p in sorted(SAMPLES.glob("*.JPEG"))[:16]:
        shutil.copy(p, tmp_path / p.name)
    truth = {r.split(",")[0]: int(r.split(",")[1]) for r in (SAMPLES / "labels.csv").read_text().splitlines()[1:]}
    r = run_cli("classify", str(tmp_path))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    hits = sum(row["predictions"][0]["index"] == truth[row["input"].rsplit("/", 1)[-1]] for row in rows)
    assert len(rows) == 16 and hits >= 12


def test_bench_model_only_prints_a_table():
    r = run_cli("bench", "--model-only", "--batch", "1", "--threads", "1", "--rounds", "2")
    assert r.returncode == 0, r.stderr
    assert "int8" in r.stdout and "img/s" in r.stdout


def test_bench_end_to_end_sweeps_daemon_settings(tmp_path):
    write_images(tmp_path / "imgs", 6)
    r = run_cli("bench", "--images", str(tmp_path / "imgs"), "--rounds", "1",
                "--daemon", "batch=2,threads=1,workers=1,lanes=1", "--daemon", "batch=4,wait=5", "--idle-seconds", "1")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0] + " " + line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("daemon b")}
    assert set(rows) == {"daemon b2", "daemon b4"}, r.stdout
    assert all(float(line.split()[6]) > 0 for line in rows.values())  # img/s measured for each
    assert r.stdout.count("arrival -> result p50") == 2 and "machine limit (" in r.stdout


def test_bench_refuses_a_malformed_daemon_setting():
    r = run_cli("bench", "--images", ".", "--daemon", "batch=8,speed=3")
    assert r.returncode == 78 and "--daemon" in r.stderr


def test_the_runtime_never_imports_torch(tmp_path):
    import subprocess
    import sys

    from tests.support.paths import ROOT

    img = write_images(tmp_path, 1)[0]
    code = ("import sys, contextlib, io\nfrom edge_infer.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['classify', {str(img)!r}]); main(['info'])\n"
            "print(sorted(m for m in ('torch', 'torchvision', 'onnx') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
