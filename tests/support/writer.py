"""A preprocessing worker and a result writer on tmp_path, and finished jobs to commit, for the
pipeline's unit tests."""
from __future__ import annotations

import functools
import queue

import numpy as np
from prometheus_client import CollectorRegistry

from edge_infer.pipeline.tensor_pool import TensorPool
from edge_infer.config import PipelineConfig
from edge_infer.classifier.session import ModelSession
from edge_infer.decoding.processes import build_decoders
from edge_infer.pipeline.context import StageContext
from edge_infer.pipeline.jobs import FolderInput
from edge_infer.pipeline.state import PipelineState
from edge_infer.ops.metrics import Metrics
from edge_infer.decoding.preprocess import PreprocessSpec
from edge_infer.pipeline.workers import PreprocessWorker
from edge_infer.commit.writer import ResultWriter, SourceRoute
from tests.support.images import write_images


@functools.lru_cache(maxsize=1)
def embedded_model() -> ModelSession:
    """The serving model the pipeline's state names in failure records: loaded once for the module."""
    return ModelSession.load(None)


def pipeline_state() -> PipelineState:
    return PipelineState(jobs=queue.Queue(), serving=embedded_model())


def make_worker(tmp_path, max_bytes=10_000_000, max_decode_mb=256, formats=("JPEG", "PNG"), decoders="thread"):
    """A worker decoding in its own thread (the decoder processes have their own tests, tests/faults/)."""
    q: queue.Queue = queue.Queue()
    cfg = PipelineConfig(max_file_bytes=max_bytes, max_decode_mb=max_decode_mb, formats=formats, decoders=decoders)
    pool = TensorPool(2, (224, 224, 3), np.uint8)
    ctx = StageContext(jobs=q, prepared=q, finished=q, pool=pool, state=pipeline_state())
    return PreprocessWorker(ctx, index=0, decoder=build_decoders(cfg, 1, PreprocessSpec(), pool)[0],
                            output_dir=tmp_path / "results", max_bytes=max_bytes,
                            decode_timeout_s=cfg.decode_timeout_s)


def make_writer(tmp_path, after="move", parked=None, **kwargs):
    done: list[FolderInput] = []
    routes = {"s": SourceRoute(after, tmp_path / "done", tmp_path / "failed", done.append)}
    ctx = StageContext(metrics=Metrics(CollectorRegistry()), state=pipeline_state(), parked=parked)
    w = ResultWriter(ctx, output_dir=tmp_path / "results", routes=routes, **kwargs)
    return w, done


def finished_jobs(tmp_path, n):
    imgs = write_images(tmp_path / "inbox", n)
    jobs = []
    for p in imgs:
        job = FolderInput("s", p.name, p)
        job.sha256, job.width, job.height = "ab" * 32, 320, 240
        job.predictions = [{"index": 1, "label": "x", "score": 1.0}]
        jobs.append(job)
    return jobs
