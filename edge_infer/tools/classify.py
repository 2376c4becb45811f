"""``edge-infer classify``: the daemon's preprocessing, batching and session over files, without the daemon."""
from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..classifier.postprocess import top_k
from ..classifier.session import ModelSession
from ..config import PipelineConfig
from ..decoding.preprocess import DEFAULT_MAX_PIXELS, is_image_name, prepare
from ..errors import InputError
from ..pipeline.input_file import read_input
from ..pipeline.records import error_result, model_ref, ok_result


@dataclass
class _Item:
    name: str
    sha256: str | None = None
    tensor: np.ndarray | None = None
    width: int = 0
    height: int = 0
    error: InputError | None = None
    preprocess_ms: float = 0.0


def expand(paths: Iterable[str]) -> Iterator[str]:
    """Files as given; folders walked recursively (image names only, sorted, hidden names skipped)."""
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for f in sorted(files):
                    if not f.startswith(".") and is_image_name(f):
                        yield os.path.join(root, f)
        else:
            yield p


def _load(name: str, session: ModelSession, max_pixels: int) -> _Item:
    item = _Item(name)
    t0 = time.perf_counter()
    try:
        # The daemon's reader and limit; the paths were named by the user, so links are theirs to follow.
        data = read_input(Path(name), PipelineConfig.max_file_bytes, follow_symlinks=True)
        item.sha256 = hashlib.sha256(data).hexdigest()
        prepared = prepare(data, session.manifest.preprocess, max_pixels)
        item.tensor, item.width, item.height = prepared.tensor, prepared.width, prepared.height
    except InputError as e:
        item.error = e
    item.preprocess_ms = 1000 * (time.perf_counter() - t0)
    return item


def classify(paths: Iterable[str], session: ModelSession, top: int, emit: Callable[[dict[str, Any]], None],
             batch_size: int = 8, workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
             on_item: Callable[[], None] | None = None) -> tuple[int, int]:
    """Classify every input, calling ``emit`` with each result in input order; returns (ok, failed)."""
    model = model_ref(session.manifest.name, session.sha256, session.precision)
    labels = session.manifest.labels
    ok = failed = 0
    names = list(expand(paths))
    workers = workers or os.cpu_count() or 2
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: list[_Item] = []
        for item in _bounded_map(pool, lambda n: _load(n, session, max_pixels), names, 2 * workers + batch_size):
            if item.error is not None:
                emit(error_result("classify", item.name, item.sha256, item.error, model))
                failed += 1
                if on_item:
                    on_item()
                continue
            pending.append(item)
            if len(pending) == batch_size:
                ok += _run_batch(pending, session, top, labels, model, emit, on_item)
                pending = []
        if pending:
            ok += _run_batch(pending, session, top, labels, model, emit, on_item)
    return ok, failed


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable[[str], _Item], names: list[str], window: int) -> Iterator[_Item]:
    """Like ``pool.map`` in input order, but never more than ``window`` prepared images in memory."""
    futures: deque[Future[_Item]] = deque()
    for name in names:
        futures.append(pool.submit(fn, name))
        if len(futures) >= window:
            yield futures.popleft().result()
    while futures:
        yield futures.popleft().result()


def _run_batch(items: list[_Item], session: ModelSession, top: int, labels: tuple[str, ...],
               model: dict[str, str], emit: Callable[[dict[str, Any]], None], on_item: Callable[[], None] | None) -> int:
    batch = np.stack([i.tensor for i in items])  # type: ignore[misc]
    t0 = time.perf_counter()
    logits = session.run(batch)
    inference_ms = 1000 * (time.perf_counter() - t0) / len(items)
    for item, preds in zip(items, top_k(logits, top, labels)):
        emit(ok_result("classify", item.name, item.sha256 or "", preds, model, item.width, item.height,
                       {"queue": 0.0, "preprocess": item.preprocess_ms, "inference": inference_ms}))
        if on_item:
            on_item()
    return len(items)
