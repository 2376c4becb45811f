"""One pipeline's timed pass over the bench's photos: the record that the daemon harness and each baseline
return, and the end-to-end report compares.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Run:
    name: str
    images: int
    seconds: float
    cpu_seconds: float
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.images / self.seconds
