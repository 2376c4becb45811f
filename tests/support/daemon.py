"""Helpers for daemon tests: a config on tmp_path, an in-process app on a thread, polling with deadlines."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from edge_infer.app import App
from edge_infer.config import load_config
from edge_infer.lifecycle import ShutdownFlags
from tests.support.paths import ROOT


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def write_config(root: Path, sources: list[dict[str, Any]] | None = None, **sections: Any) -> Path:
    sources = sources or [{"name": "drops", "type": "folder", "path": "inbox", "after": "move",
                           "done_dir": "done", "failed_dir": "failed"}]
    data = {"sources": sources, "output": {"dir": "results"}, "metrics": {"host": "127.0.0.1", "port": 0},
            "batch": {"max_size": 4, "max_wait_ms": 5}, "pipeline": {"workers": 2}, "shutdown": {"drain_timeout_s": 10}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def jsonl_rows(root: Path, source: str) -> list[dict]:
    """Every line of a camera's JSON Lines files under ``<root>/results/<source>/``, oldest file first."""
    folder = root / "results" / source
    rows = []
    for f in sorted(folder.glob("*.jsonl")) if folder.exists() else []:
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return rows


class RunningApp:
    """An ``App`` serving on a background thread, stopped (and checked to stop) on exit."""

    def __init__(self, config_path: Path, **app_kwargs: Any) -> None:
        self.app = App(load_config(config_path), **app_kwargs)
        self.flags = ShutdownFlags()
        self.thread = threading.Thread(target=self.app.serve, args=(self.flags,), name="test-app")

    def __enter__(self) -> "RunningApp":
        self.thread.start()
        wait_for(lambda: self.app.is_ready() or not self.thread.is_alive(), 60, "ready")
        assert self.app.is_ready(), "app died during start-up"
        return self

    def __exit__(self, *exc: object) -> None:
        self.flags.should_exit.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "app did not stop"

    def sample(self, name: str, **labels: str) -> float:
        return self.app.registry.get_sample_value(name, labels) or 0.0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.app.http.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


def waiting(inbox: Path) -> set[str]:
    """The inputs still in ``inbox``, where they were dropped or claimed by the daemon (a claim keeps the
    name it came under, see edge_infer/sources/claims.py), by that name."""
    from edge_infer.sources.claims import CLAIMED, OWN_DIR, decode

    if not inbox.exists():
        return set()
    theirs = {p.relative_to(inbox).as_posix() for p in inbox.rglob("*")
              if OWN_DIR not in p.relative_to(inbox).parts and (p.is_symlink() or not p.is_dir())}
    claimed = inbox / OWN_DIR / CLAIMED
    return theirs | ({decode(p.name) or p.name for p in claimed.iterdir()} if claimed.is_dir() else set())


def read_result(root: Path, rel: str, source: str = "drops") -> dict[str, Any]:
    return json.loads((root / "results" / source / f"{rel}.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@contextmanager
def daemon(cfg: Path, env_extra: dict[str, str] | None = None,
           log: Path | None = None) -> Iterator[subprocess.Popen]:
    """``edge-infer run`` as a subprocess; killed if the test leaves it running. Its output goes to a pipe,
    or, for long runs whose log could fill a pipe nobody reads meanwhile, appended to ``log``."""
    env = {**os.environ, **(env_extra or {}), "PYTHONPATH": str(ROOT)}
    out = open(log, "a") if log is not None else subprocess.PIPE  # noqa: SIM115 - closed below
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edge_infer", "run", "-c", str(cfg)], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    finally:
        if log is not None:
            out.close()


def scrape(port: int) -> str:
    """The daemon's /metrics text."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def install_model(model_dir: Path, src_dir: Path) -> str:
    """Replace the model as an operator would: the self-test folder (when there is one) first, then each model
    file copied beside and renamed over. Returns the new model's sha256."""
    from edge_infer.classifier.manifest import sha256_file

    if (src_dir / "selftest").is_dir():
        shutil.copytree(src_dir / "selftest", model_dir / "selftest", dirs_exist_ok=True)
    for name in ("model.json", "model.onnx"):
        shutil.copy(src_dir / name, model_dir / f"{name}.new")
        os.replace(model_dir / f"{name}.new", model_dir / name)
    return sha256_file(model_dir / "model.onnx")
