"""What every stage shares, handed to each as one ``ctx``: the queues between the stages and the
stores they share (uvicorn hands its ``ServerState`` and ``Config`` to each protocol the same
way). Each stage takes ``ctx`` and only its own few arguments."""
from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

from ..commit.inflight import InflightJournal
from ..commit.parked import ParkedInputs
from ..ops.faults import Faults
from ..ops.metrics import Metrics
from .jobs import CameraFrame, FolderInput, Job, Ticket
from .state import PipelineState
from .tensor_pool import TensorPool


def _queue() -> queue.Queue[Any]:
    return queue.Queue()


@dataclass(frozen=True)
class StageContext:
    """The app makes it before the model loads; ``pool`` and ``state`` come with the model
    (``dataclasses.replace``). Tests fill in what the stage under test uses."""

    jobs: queue.Queue[FolderInput] = field(default_factory=_queue)
    prepared: queue.Queue[Job | Ticket] = field(default_factory=_queue)
    finished: queue.Queue[FolderInput | list[FolderInput]] = field(default_factory=_queue)
    frames: queue.Queue[list[CameraFrame]] = field(default_factory=_queue)  # for the regions stage
    metrics: Metrics | None = None  # None: not counted (a folder source under test)
    journal: InflightJournal | None = None
    parked: ParkedInputs | None = None
    faults: Faults = field(default_factory=Faults)
    pool: TensorPool | None = None  # the uint8 crops; a dead stage's go back to it
    state: PipelineState | None = None
