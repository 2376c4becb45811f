"""What every source has, whatever its type."""
from __future__ import annotations

from dataclasses import dataclass

from ..config_reader import REQUIRED, setting


@dataclass(frozen=True)
class BaseSourceConfig:
    """Read before a source's type is known, so that its problems are reported either way."""
    name: str = setting(REQUIRED, "unique among the sources", pattern=r"[a-z0-9_-]+")
