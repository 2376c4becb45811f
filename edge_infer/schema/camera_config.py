"""The schema of a camera source and of the regions watched in its frames (README, Camera
regions)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..config_reader import ABSENT, REQUIRED, Section, read, setting, show
from .source_config import BaseSourceConfig


@dataclass(frozen=True)
class RegionModelConfig:
    path: Path = setting(
        REQUIRED, "a .onnx model with model.json beside it (edge-infer train makes one)")


@dataclass(frozen=True)
class RegionConfig:
    """A part of a camera's frames watched for a state (see README, Camera regions)."""
    name: str = setting(REQUIRED, "unique within its camera", pattern=r"[a-z0-9_-]+")
    crop: tuple[float, float, float, float] = setting(
        (0.0, 0.0, 1.0, 1.0), "[x1, y1, x2, y2]: whole pixels, or fractions of the frame when all "
                              "are at most 1 (_parse_crop)")
    # read as an optional section; None: the daemon's model
    model: Optional[RegionModelConfig] = None
    states: tuple[str, ...] = setting((), "the model's labels that are states, others never count; "
                                          "none: every label (_parse_states)")
    threshold: float = setting(
        0.8, "a frame's top-1 counts towards a state only at or above this score", ge=0, le=1)
    confirm_frames: int = setting(3, "consecutive agreeing frames that confirm a new state",
                                  ge=1, le=1000)
    sample_below: float = setting(
        0.95, "samples_dir: frames scoring below this are kept as samples", ge=0, le=1)
    samples_per_hour: int = setting(60, "samples_dir: at most this many samples an hour",
                                    ge=0, le=100_000)
    # not a key: where it was read from ("sources[1].regions[0]"), to name it in later errors
    key: str = ""


@dataclass(frozen=True)
class CameraSourceConfig(BaseSourceConfig):
    """A camera or stream (RTSP, HTTP(S), /dev/videoN, a video file), sampled at ``fps`` frames
    per second."""
    url: str = setting(REQUIRED, "the stream; a local video file is stored as an absolute path")
    type: Literal["camera"] = setting("camera", "the source type")
    fps: float = setting(2.0, "frames classified per second", gt=0, le=60)
    transport: Literal["tcp", "udp"] = setting("tcp", "RTSP only; TCP survives lossy links and NAT")
    open_timeout_s: float = setting(10.0, "bound on opening the stream", gt=0, le=300)
    read_timeout_s: float = setting(5.0, "bound on each read", gt=0, le=300)
    reconnect_min_s: float = setting(
        1.0, "backoff after a failure doubles from here, with jitter...", gt=0)
    reconnect_max_s: float = setting(30.0, "...up to here", gt=0)
    stall_after_s: float = setting(
        10.0, "no frame for this long: the feed counts as down and is reopened", gt=0)
    frozen_after_s: float = setting(
        30.0, "identical frames for this long: reported as frozen", gt=0)
    loop: bool = setting(True, "video files: start again at the end")
    video_size: Optional[str] = setting(None, 'V4L2: "640x480"',
                                        pattern=r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}")
    input_format: Optional[str] = setting(None, 'V4L2: "mjpeg", "yuyv422", ...')
    rotate_bytes: int = setting(
        16 << 20, "JSON Lines results: a new file past this size (and each day)", ge=4096)
    keep_files: int = setting(10, "JSON Lines files kept per camera", ge=1, le=10000)
    regions: tuple[RegionConfig, ...] = ()  # read by _parse_regions
    frames: Optional[str] = setting(
        None, "JSON Lines: a line per frame (all) or only region state changes (changes); None: "
              "changes with regions, else all", pattern=r"all|changes")
    samples_dir: Optional[Path] = setting(
        None, "regions: crops kept for training, <dir>/<region>/<state>/")
    samples_max_files: int = setting(
        1000, "samples_dir: files kept per region, oldest removed first", ge=1)
    samples_max_bytes: int = setting(
        64 << 20, "samples_dir: bytes kept per region, oldest removed first", ge=4096)

    @property
    def every_frame(self) -> bool:
        """A JSON Lines line for every frame (frames: all), not only region changes."""
        return (self.frames or ("changes" if self.regions else "all")) == "all"


def _camera_url(s: Section) -> str:
    url = s.text("url")
    if url and "://" not in url and not url.startswith("/dev/"):
        # a video file, relative to the config
        return os.path.normpath(s.base_dir / Path(url).expanduser())
    return url


def _parse_crop(s: Section) -> tuple[float, float, float, float]:
    """[x1, y1, x2, y2]: fractions of the frame when every value is at most 1, else whole pixels."""
    v = s.raw("crop")
    whole: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    if v is ABSENT:
        return whole
    if (not isinstance(v, list) or len(v) != 4
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                       for x in v)):
        s.error("crop", "must be [x1, y1, x2, y2] (pixels, or fractions of the frame), "
                        f"got {show(v)}")
        return whole
    if min(v) < 0:
        s.error("crop", f"must not be negative, got {show(v)}")
    elif max(v) > 1 and not all(float(x).is_integer() for x in v):
        s.error("crop", "must be whole pixels, or fractions of the frame all within [0, 1], "
                        f"got {show(v)}")
    elif not (v[0] < v[2] and v[1] < v[3]):
        s.error("crop", f"must have x1 < x2 and y1 < y2, got {show(v)}")
    else:
        return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))
    return whole


def _parse_states(s: Section) -> tuple[str, ...]:
    v = s.raw("states")
    if v in (ABSENT, None):
        return ()
    if (not isinstance(v, list) or len(v) < 2
            or not all(isinstance(x, str) and x.strip() for x in v)):
        s.error("states", "must be a list of at least two labels of the region's model, "
                          f"got {show(v)}")
        return ()
    if "unknown" in v:
        s.error("states", "must not name unknown: it is the state before the first confirmation")
    elif len(set(v)) != len(v):
        s.error("states", f"must not repeat a state, got {show(v)}")
    return tuple(v)


def _parse_region(s: Section) -> RegionConfig:
    region = read(s, RegionConfig, crop=_parse_crop, states=_parse_states, key=lambda r: r.where,
                  model=lambda r: r.optional_section("model", lambda m: read(m, RegionModelConfig)))
    s.finish()
    return region


def _parse_regions(s: Section) -> tuple[RegionConfig, ...]:
    raw = s.raw("regions")
    if raw in (ABSENT, None):
        return ()
    if not isinstance(raw, list) or not raw:
        s.error("regions", f"must be a non-empty list of regions, got {show(raw)}")
        return ()
    regions = tuple(_parse_region(s.child(f"{s.key('regions')}[{i}]", item))
                    for i, item in enumerate(raw))
    names = [r.name for r in regions]
    for i, name in enumerate(names):
        if name and name in names[:i]:
            s.error(f"regions[{i}].name", f"duplicate region name {name!r}")
    return regions


def parse_camera(s: Section, name: str) -> CameraSourceConfig:
    cam = read(s, CameraSourceConfig, name=lambda _: name, url=_camera_url, regions=_parse_regions)
    if cam.reconnect_max_s < cam.reconnect_min_s:
        s.error("reconnect_max_s", f"must be >= reconnect_min_s ({cam.reconnect_min_s}), "
                                   f"got {cam.reconnect_max_s}")
    if cam.frames == "changes" and not cam.regions:
        s.error("frames", "changes: only the changes of regions are written, and this camera has "
                          "no regions")
    if cam.samples_dir is not None and not cam.regions:
        s.error("samples_dir", "keeps crops of regions, and this camera has no regions")
    return cam
