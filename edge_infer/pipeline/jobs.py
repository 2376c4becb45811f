"""What flows between the stages, one class per kind: a folder input (``FolderInput``), carried
from its source to its acknowledgement; a camera frame or one region's crop of it
(``CameraFrame``), carried to the regions stage; and a camera's claim ticket (``Ticket``)."""
from __future__ import annotations

import time
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError


@dataclass
class Job:
    """What every kind shares. ``rel`` is the name results are filed (or reported) under."""

    source: str
    rel: str
    _: KW_ONLY
    detected_at: float = field(default_factory=time.time)  # wall clock: end-to-end latency
    enqueued_at: float = field(default_factory=time.monotonic)
    # Filled in along the way:
    tensor: np.ndarray | None = None
    width: int = 0
    height: int = 0
    error: InputError | None = None
    predictions: list[dict[str, Any]] | None = None
    model: dict[str, str] | None = None  # the model that made ``predictions`` (a reload may swap it)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def outcome(self) -> str:
        return "failed" if self.error is not None else "ok"


@dataclass
class FolderInput(Job):
    """One file of a folder source; ``rel`` is its path relative to the source folder."""

    path: Path
    _: KW_ONLY
    sha256: str | None = None
    duplicate: bool = False  # a previous run committed this very input's result
    committed: bool = False  # its result or failure record is on disk (never written twice)
    record: dict[str, Any] | None = None  # that record, when this run wrote it
    stored_as: str | None = None  # the name its record and input are filed under: rel, or rel~<sha>
    inflight_key: tuple[int, ...] | None = None  # a quarantined input's journal key, until commit
    # (st_dev, st_ino, st_size, st_mtime_ns) of the file as opened
    identity: tuple[int, ...] | None = None
    spooled: bool = False  # the record is in the MQTT spool (output.mqtt): never added twice

    @property
    def outcome(self) -> str:
        return "duplicate" if self.duplicate else super().outcome


@dataclass
class CameraFrame(Job):
    """A camera's frame, or one region's crop of it."""

    _: KW_ONLY
    frame: dict[str, Any] | None = None  # timestamp, seq, media time: set once sampled
    region: str | None = None  # a region's crop (sources[].regions[].name)
    session: Any = None  # the region's own model (a ModelSession); None: the daemon's serving model
    crop: Any = None  # the region's crop as a PIL image, kept until the regions stage (samples_dir)


@dataclass
class Ticket:
    """A camera's claim ticket: the batcher calls ``take`` for the newest frame, one
    ``CameraFrame`` per region of it (None: nothing left to take)."""

    source: str
    take: Callable[[], "list[CameraFrame] | None"]
