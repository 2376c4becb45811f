"""The daemon under test: ``edge-infer run`` as a real subprocess on a temporary watched folder, with the
settings a sweep varies, and the means to feed it photos and time them (a burst, a trickle, idle CPU).

A subprocess, not the app in-process: the bench measures what a user runs, with its own CPU and memory
counters, and nothing of the bench's own work is charged to the daemon.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..config import BatchConfig, PipelineConfig
from .bench_run import Run
from .procfs import proc_rss_mb, tree_cpu_seconds, tree_pss_mb
from .result_watch import ResultWatch


@dataclass(frozen=True)
class DaemonSettings:
    """The settings a sweep varies (``--daemon batch=8,wait=10,threads=0,workers=0,lanes=0,decoders=thread``);
    0 = the daemon's default. ``lanes`` is ``pipeline.inference_threads``, ``decoders`` ``pipeline.decoders``;
    ``code``: another checkout of edge-infer to run the daemon from (a previous main, side by side with
    this one in the same interleaved run)."""

    batch: int = BatchConfig.max_size  # the daemon's own defaults, so that a plain bench measures them
    wait_ms: float = BatchConfig.max_wait_ms
    threads: int = 0
    workers: int = 0
    lanes: int = 0
    decoders: str = PipelineConfig.decoders
    code: str = ""

    @classmethod
    def parse(cls, text: str) -> "DaemonSettings":
        keys = {"batch": "batch", "wait": "wait_ms", "threads": "threads", "workers": "workers", "lanes": "lanes",
                "decoders": "decoders", "code": "code"}
        text_keys = ("decoders", "code")
        values: dict[str, object] = {}
        for part in filter(None, text.split(",")):
            k, _, v = part.partition("=")
            k = k.strip()
            if k not in keys or not v or (k == "decoders" and v not in ("process", "thread")):
                raise ValueError("expected e.g. batch=8,wait=10,threads=0,workers=0,lanes=0,decoders=thread, "
                                 f"got {text!r}")
            if k == "code" and not (Path(v) / "edge_infer" / "__init__.py").is_file():
                raise ValueError(f"code={v}: not a checkout of edge-infer (no edge_infer/__init__.py)")
            values[keys[k]] = v if k in text_keys else float(v) if k == "wait" else int(float(v))
        return cls(**values)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        return (f"daemon b{self.batch} w{self.wait_ms:g} t{self.threads} p{self.workers} l{self.lanes}"
                + ("" if self.decoders == "process" else f" {self.decoders}")
                + (f" code={Path(self.code).name}" if self.code else ""))


class Daemon:
    """``edge-infer run`` on a temporary folder, as a subprocess."""

    def __init__(self, work: Path, model: Path, settings: DaemonSettings) -> None:
        self.work = work
        self.peak_pss_mb = 0.0  # of the whole process tree, sampled during bursts
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.port = port
        cfg = {"model": {"path": str(model), "threads": settings.threads},
               "sources": [{"name": "bench", "type": "folder", "path": "inbox", "after": "delete",
                            "failed_dir": "failed"}],
               "batch": {"max_size": settings.batch, "max_wait_ms": settings.wait_ms},
               "pipeline": {"workers": settings.workers, "inference_threads": settings.lanes,
                            "decoders": settings.decoders},
               "output": {"dir": "results"},
               "metrics": {"host": "127.0.0.1", "port": port}, "logging": {"level": "warning"}}
        (work / "config.yaml").write_text(json.dumps(cfg))  # JSON is YAML
        self.results = ResultWatch(work / "results" / "bench")
        # Its log goes to a file, not a pipe: nobody reads a pipe during a long run, and a full one would
        # block the daemon's logging (and the daemon) once it holds 64 KB.
        self.log = work / "daemon.log"
        with open(self.log, "wb") as log:
            env = {**os.environ, "PYTHONPATH": str(Path(settings.code).resolve())} if settings.code else None
            self.proc = subprocess.Popen([sys.executable, "-m", "edge_infer", "run", "-c", str(work / "config.yaml")],
                                         stdout=subprocess.DEVNULL, stderr=log, cwd=work, env=env)
        deadline = time.monotonic() + 120
        while not self._ready():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"daemon did not get ready: {self.log.read_text(errors='replace')[-500:]}")
            time.sleep(0.05)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def burst(self, files: list[Path], round_no: int) -> Run:
        staging = self.work / f"staging{round_no}"
        staging.mkdir()
        names = []
        for f in files:
            shutil.copy(f, staging / f.name)
            names.append(f.name)
        arrived: dict[str, float] = {}
        # The whole tree: the decoder processes' CPU is the daemon's too.
        cpu0, t0 = tree_cpu_seconds(self.proc.pid), time.perf_counter()
        with self._sampling_pss():
            for n in names:  # a rename is how finished files land in a watched folder
                os.rename(staging / n, self.work / "inbox" / f"r{round_no}_{n}")
                arrived[f"r{round_no}_{n}.json"] = time.perf_counter()
            seen = self.results.wait_for(set(arrived), timeout=600)
        elapsed = max(seen.values()) - t0
        return Run("daemon", len(seen), elapsed, tree_cpu_seconds(self.proc.pid) - cpu0,
                   [seen[n] - arrived[n] for n in seen])

    @contextlib.contextmanager
    def _sampling_pss(self, every_s: float = 0.05) -> Iterator[None]:
        """``peak_pss_mb``: the largest PSS of the daemon's process tree seen meanwhile. Reading
        smaps_rollup of a handful of processes costs the bench well under a millisecond a sample."""
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(every_s):
                self.peak_pss_mb = max(self.peak_pss_mb, tree_pss_mb(self.proc.pid))

        thread = threading.Thread(target=sample, name="pss-sampler", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)

    def trickle(self, files: list[Path], interval: float) -> list[float]:
        """Light load: one file every ``interval`` seconds; each file's arrival -> result latency."""
        staging = self.work / "trickle"
        staging.mkdir()
        for f in files:
            shutil.copy(f, staging / f.name)
        arrived: dict[str, float] = {}
        t0 = time.perf_counter()
        for i, f in enumerate(files):
            time.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
            name = f"t_{f.name}"
            os.rename(staging / f.name, self.work / "inbox" / name)
            arrived[name + ".json"] = time.perf_counter()
        seen = self.results.wait_for(set(arrived), timeout=60)
        return [seen[n] - arrived[n] for n in seen]

    def rss_mb(self) -> tuple[float, float]:
        return proc_rss_mb(self.proc.pid), proc_rss_mb(self.proc.pid, "VmHWM")

    def tree_pss_mb(self) -> float:
        """PSS of the daemon and any processes it started: shared pages counted once, by share."""
        return tree_pss_mb(self.proc.pid)

    def stop(self) -> None:
        self.results.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def idle_cpu_percent(daemons: dict[str, Daemon], seconds: float) -> dict[str, float]:
    """CPU each idle daemon used over the same ``seconds``, as a percentage of one core."""
    c0 = {label: tree_cpu_seconds(d.proc.pid) for label, d in daemons.items()}
    time.sleep(seconds)
    return {label: 100 * (tree_cpu_seconds(d.proc.pid) - c0[label]) / seconds for label, d in daemons.items()}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
