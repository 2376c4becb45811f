"""Model hot swap: on SIGHUP, or when the model file changes, load the model again in a shadow session,
self-test it and hand it to the inference stage; a model that fails keeps the old one serving.

The shadow session loads and warms up on this thread while the serving one goes on working, so a reload
costs no downtime, only the CPU of the load (about a second on a small device) and, for that second, the
memory of a second session.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from ..errors import ModelError
from ..lifecycle import Stage
from ..ops.metrics import Metrics
from .manifest import manifest_path_for
from .selftest import self_test
from .session import ModelSession, SessionOptions

log = logging.getLogger(__name__)
Signature = Optional[tuple[tuple[int, int, int], ...]]  # not `X | None`: evaluated at run time (Python 3.9)


def file_signature(model: Path) -> Signature:
    """What changes when the model or its manifest is replaced (None while either is missing)."""
    try:
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in (os.stat(model), os.stat(manifest_path_for(model))))
    except OSError:
        return None


class ModelReloader(Stage):
    """Reloads on ``request()`` and, with ``watch``, once the model files have been still for ``settle_s``.

    ``settle_s`` matters because a model is replaced as two files (``model.onnx`` and ``model.json``),
    usually by a copy that takes a while: loading at the first change would read a half-written file or a
    new model with the old manifest, and count a failure for what is only a copy in progress.
    """

    poll_s = 0.5
    kind = "reloader"

    def __init__(self, *, path: Path, options: SessionOptions, warm_batch: int, serving: Callable[[], ModelSession],
                 swap: Callable[[ModelSession], None], metrics: Metrics, watch: bool, settle_s: float = 2.0) -> None:
        super().__init__("model-reload")
        self._path, self._options, self._warm_batch = path, options, warm_batch
        self._serving, self._swap, self._metrics = serving, swap, metrics
        self._watch, self._settle_s = watch, settle_s
        self._requested = threading.Event()
        self._tried = file_signature(path)  # the files last loaded or refused: no retrying a refused model

    def request(self) -> None:
        self._requested.set()

    def run(self) -> None:
        seen, still_since = self._tried, time.monotonic()
        while not self.wait(self.poll_s):
            if self._requested.is_set():
                self._requested.clear()
                self._reload("SIGHUP")
                seen = self._tried
                continue
            if not self._watch:
                continue
            sig = file_signature(self._path)
            if sig != seen:
                seen, still_since = sig, time.monotonic()
            elif sig is not None and sig != self._tried and time.monotonic() - still_since >= self._settle_s:
                self._reload("model file changed")

    def _reload(self, reason: str) -> None:
        self._tried = file_signature(self._path)
        log.info("reloading the model (%s) from %s", reason, self._path)
        try:
            candidate = ModelSession.load(self._path, self._options)
            candidate.warm_up(self._warm_batch)
            summary = self_test(candidate, self._serving())
        except ModelError as e:
            self._metrics.model_reloaded("failed")
            log.error("model reload (%s) refused, the current model keeps serving: %s", reason, e)
            return
        except Exception:  # noqa: BLE001 - e.g. onnxruntime failing in warm-up: refused too, and SIGHUP still works
            self._metrics.model_reloaded("failed")
            log.exception("model reload (%s) failed unexpectedly, the current model keeps serving", reason)
            return
        if not self.should_keep_running():
            return  # shutting down: the serving model finishes the drain
        self._swap(candidate)
        self._metrics.model_reloaded("ok")
        log.info("model reloaded (%s): %s %s (%s); %s", reason, candidate.manifest.name, candidate.sha256[:12],
                 candidate.precision, summary)
