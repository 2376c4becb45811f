"""A camera region's state: a stream of per-frame guesses turned into confirmed changes (issue 18's rules).

- A frame's top-1 counts only at or above ``threshold``; one below it never changes the state, and it breaks
  a run of agreeing frames (the run must be consecutive).
- A new state is confirmed by ``confirm_frames`` consecutive counting frames that agree on it, and announced
  once, as one ``Change``.
- A counting frame of the current state ends any run towards another one: a single frame of another scene
  spliced in changes nothing.
- The state is ``unknown`` until the first confirmation, and again when the camera goes down (``down``),
  which is announced too, so that whoever shows the state stops showing a stale one.

- With ``states`` declared, a frame whose top-1 is none of them counts as a frame below the threshold.

Pure logic, no clock and no I/O: ``regions/watcher.py`` feeds it each region's frames in order and
publishes what it returns.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Change:
    """A confirmed change of a region's state."""

    source: str
    region: str
    state: str
    previous: str
    score: float | None  # the confirming frame's top-1 score; None when the camera went down
    frame: dict[str, Any]  # the confirming frame's {timestamp, seq}; {} when the camera went down
    at: str  # UTC, ISO 8601

    def event(self) -> dict[str, Any]:
        """The JSON Lines event and MQTT payload."""
        return {"source": self.source, "region": self.region, "state": self.state, "previous": self.previous,
                "score": self.score, "frame": self.frame, "at": self.at}


@dataclass
class RegionState:
    source: str
    region: str
    threshold: float = 0.8
    confirm_frames: int = 3
    states: tuple[str, ...] = ()  # empty: every label is a state
    state: str = UNKNOWN
    started: bool = False  # the last frame observed began a run towards a new state (samples keep it)
    _candidate: str | None = field(default=None, repr=False)
    _run: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], not {self.threshold}")
        if self.confirm_frames < 1:
            raise ValueError(f"confirm_frames must be at least 1, not {self.confirm_frames}")

    def observe(self, label: str, score: float, frame: dict[str, Any], at: str) -> Change | None:
        """One frame's top-1; the change it confirms, if any."""
        self.started = False
        if score < self.threshold or (self.states and label not in self.states):
            self._candidate, self._run = None, 0
            return None
        if label == self.state:
            self._candidate, self._run = None, 0
            return None
        if label == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run, self.started = label, 1, True
        if self._run < self.confirm_frames:
            return None
        change = Change(self.source, self.region, label, self.state, score, frame, at)
        self.state, self._candidate, self._run = label, None, 0
        return change

    def down(self, at: str) -> Change | None:
        """The camera went down (stalled past ``stall_after_s``, or unreachable): the state is unknown again."""
        self._candidate, self._run = None, 0
        if self.state == UNKNOWN:
            return None
        change = Change(self.source, self.region, UNKNOWN, self.state, None, {}, at)
        self.state = UNKNOWN
        return change
