"""How many threads of each kind the daemon runs on this machine: the config's counts, each 0 resolved."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import AppConfig


@dataclass(frozen=True)
class ThreadPlan:
    workers: int  # preprocessing threads
    inference_threads: int  # batches run at once
    intra_op: int  # onnxruntime threads for each of them


def plan_threads(config: AppConfig, cores: int) -> ThreadPlan:
    """The configured thread counts, with each 0 resolved for this machine's ``cores``."""
    lanes = config.pipeline.inference_threads or min(2, cores)
    return ThreadPlan(config.pipeline.workers or cores, lanes, config.model.threads or max(1, cores // lanes))
