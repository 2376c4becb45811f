"""What flows between the stages: one ``Job`` per input, carried from its source to its acknowledgement."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import InputError


@dataclass
class Job:
    """One input. ``rel`` is its path relative to the source folder (the name results are filed under)."""

    source: str
    rel: str
    path: Path | None  # None for a camera frame
    detected_at: float = field(default_factory=time.time)  # wall clock: end-to-end latency starts here
    enqueued_at: float = field(default_factory=time.monotonic)
    # Filled in along the way:
    sha256: str | None = None
    tensor: np.ndarray | None = None
    width: int = 0
    height: int = 0
    error: InputError | None = None
    duplicate: bool = False  # a previous run committed this very input's result
    committed: bool = False  # its result or failure record is on disk (never written twice)
    record: dict[str, Any] | None = None  # that record, when this run wrote it
    stored_as: str | None = None  # the name its record and input are filed under: rel, or rel~<sha256[:8]>...
    inflight_key: tuple[int, ...] | None = None  # a quarantined input's journal key, cleared at its commit
    identity: tuple[int, ...] | None = None  # (st_dev, st_ino, st_size, st_mtime_ns) of the file as opened
    spooled: bool = False  # the record is in the MQTT spool (output.mqtt): never added twice
    frame: dict[str, Any] | None = None  # camera frames: timestamp, seq, media time
    # A camera's claim ticket: the batcher calls it for the newest frame, one job per region of it (None:
    # nothing left to take).
    take: Callable[[], "list[Job] | None"] | None = None
    region: str | None = None  # a camera region's crop (sources[].regions[].name)
    session: Any = None  # the region's own model (a ModelSession); None: the daemon's serving model
    crop: Any = None  # the region's crop as a PIL image, kept until the regions stage for samples_dir
    predictions: list[dict[str, Any]] | None = None
    model: dict[str, str] | None = None  # the model that made ``predictions`` (a reload may swap it)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def outcome(self) -> str:
        if self.duplicate:
            return "duplicate"
        return "failed" if self.error is not None else "ok"
