"""Model-only benchmarks: several models side by side, timed in short interleaved bursts.

This machine class is shared and noisy (the same model drifts 20-40% within a minute), and noise only ever
adds time. So each model runs a short burst in turn, round after round, and we report each model's best
burst: the comparison is made in one run, under the same conditions, at the same moments.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..classifier.session import SessionOptions, make_ort_session


@dataclass(frozen=True)
class BurstResult:
    name: str
    batch: int
    threads: int
    best_ms_per_batch: float
    median_ms_per_batch: float
    cpu_ms_per_image: float

    @property
    def best_ms_per_image(self) -> float:
        return self.best_ms_per_batch / self.batch

    @property
    def images_per_second(self) -> float:
        return 1000.0 * self.batch / self.best_ms_per_batch


def interleaved_bursts(runners: dict[str, Callable[[], None]], rounds: int, per_burst: int) -> dict[str, tuple[list[float], float]]:
    """For each runner: the wall ms per call of each burst, and CPU ms per call over all bursts."""
    walls: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, float] = {name: 0.0 for name in runners}
    for name, run in runners.items():  # warm-up outside the timing: first runs allocate
        run()
        run()
    for _ in range(rounds):
        for name, run in runners.items():
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(per_burst):
                run()
            walls[name].append(1000.0 * (time.perf_counter() - t0) / per_burst)
            cpu[name] += 1000.0 * (time.process_time() - c0) / per_burst
    return {name: (walls[name], cpu[name] / rounds) for name in runners}


def model_only(models: dict[str, Path], inputs: np.ndarray, batches: tuple[int, ...] = (1, 8),
               threads: tuple[int, ...] = (1, 2), rounds: int = 15, min_burst_s: float = 0.25) -> list[BurstResult]:
    """Latency and throughput of each model for each (batch, threads), models interleaved within a setting."""
    results: list[BurstResult] = []
    for t in threads:
        sessions = {name: make_ort_session(path, SessionOptions(intra_op_threads=t)) for name, path in models.items()}
        for b in batches:
            x = np.ascontiguousarray(np.resize(inputs, (b, *inputs.shape[1:])).astype(np.float32))
            runners = {name: _runner(s, x) for name, s in sessions.items()}
            per_burst = _burst_length(runners, min_burst_s)
            for name, (walls, cpu_ms) in interleaved_bursts(runners, rounds, per_burst).items():
                results.append(BurstResult(name, b, t, min(walls), float(np.median(walls)), cpu_ms / b))
    return results


def _runner(session, x: np.ndarray) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


def _burst_length(runners: dict[str, Callable[[], None]], min_burst_s: float) -> int:
    """Calls per burst so that the slowest model's burst lasts about ``min_burst_s``."""
    slowest = 0.0
    for run in runners.values():
        run()
        t0 = time.perf_counter()
        run()
        slowest = max(slowest, time.perf_counter() - t0)
    return max(3, int(min_burst_s / max(slowest, 1e-6)))


def format_table(results: list[BurstResult]) -> str:
    head = f"{'model':<12} {'batch':>5} {'threads':>7} {'best ms/img':>11} {'median ms/img':>13} {'img/s':>8} {'CPU ms/img':>10}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.name:<12} {r.batch:>5} {r.threads:>7} {r.best_ms_per_image:>11.2f} "
                     f"{r.median_ms_per_batch / r.batch:>13.2f} {r.images_per_second:>8.1f} {r.cpu_ms_per_image:>10.2f}")
    return "\n".join(lines)
