"""A camera region on the camera's side: where its crop is cut, and which model and preprocessing it gets."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import CameraSourceConfig, RegionConfig
from ..decoding.preprocess import PreprocessSpec
from ..errors import ConfigError, InvalidConfig, ModelError


@dataclass(frozen=True)
class RegionCrop:
    config: RegionConfig
    spec: PreprocessSpec  # the preprocessing of the model that classifies it
    session: Any = None  # the region's own ModelSession; None: the daemon's serving model

    def box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The crop in pixels of a ``width`` x ``height`` frame (PIL's left, upper, right, lower).

        Fractions scale with the frame, at least one pixel each way; pixels must lie within it, or the
        stream is refused with the key named (a region cut off by a smaller stream would watch the wrong
        place without anyone noticing).
        """
        x1, y1, x2, y2 = self.config.crop
        if max(self.config.crop) <= 1:
            left, upper = min(round(x1 * width), width - 1), min(round(y1 * height), height - 1)
            return left, upper, max(round(x2 * width), left + 1), max(round(y2 * height), upper + 1)
        if x2 > width or y2 > height:
            raise ValueError(f"{self.config.key}.crop [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is outside the "
                             f"{width}x{height} frame")
        return int(x1), int(y1), int(x2), int(y2)


def region_crops(camera: CameraSourceConfig, serving: Any,
                 load: Callable[[Path], Any]) -> tuple[RegionCrop, ...]:
    """The camera's regions, each with its model loaded (``load``, a path -> ModelSession) and checked: its
    input must be the daemon model's (its crops share the daemon's tensor pool), and the ``states`` named
    must be labels of the model that classifies the region. Raises ``InvalidConfig`` naming each key."""
    crops, problems = [], []
    for r in camera.regions:
        session = None
        if r.model is not None:
            try:
                session = load(r.model.path)
            except ModelError as e:
                problems.append(ConfigError(f"{r.key}.model.path", str(e)))
                continue
            if tuple(session.input_shape) != tuple(serving.input_shape):
                problems.append(ConfigError(f"{r.key}.model.path", f"takes input {list(session.input_shape)}, "
                                            f"the daemon's model {list(serving.input_shape)}: they must agree"))
                continue
        model = session or serving
        labels = set(model.manifest.labels)
        unknown = [s for s in r.states if s not in labels]
        if unknown:
            some = ", ".join(repr(x) for x in model.manifest.labels[:8])
            more = ", ..." if len(model.manifest.labels) > 8 else ""
            problems.append(ConfigError(f"{r.key}.states", f"{', '.join(map(repr, unknown))} not among the labels of "
                                                           f"{model.path} ({some}{more})"))
            continue
        crops.append(RegionCrop(r, model.manifest.preprocess, session))
    if problems:
        raise InvalidConfig("config", problems)
    return tuple(crops)
