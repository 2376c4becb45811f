"""The YAML config, parsed once into frozen dataclasses; every problem is reported with its key
path.

``AppConfig`` is the whole config, made of the sections declared in ``schema/`` (one module per
section, each key declared once there with its doc). Every schema name is importable from here.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

from .config_reader import ABSENT, Section, load_yaml, parsed, read, show
from .errors import ConfigError, InvalidConfig
from .schema.camera_config import CameraSourceConfig, RegionConfig, RegionModelConfig, parse_camera
from .schema.folder_config import LABEL_FIELD, FolderSourceConfig, parse_folder, sorting_root
from .schema.output_config import DEVICE_PATTERN, MqttConfig, OutputConfig, parse_output
from .schema.processing_config import IMAGE_FORMATS, BatchConfig, ModelConfig, PipelineConfig
from .schema.service_config import LoggingConfig, MetricsConfig, ShutdownConfig
from .schema.source_config import BaseSourceConfig

__all__ = [
    "DEVICE_PATTERN", "IMAGE_FORMATS", "LABEL_FIELD", "AppConfig", "BaseSourceConfig",
    "BatchConfig", "CameraSourceConfig", "FolderSourceConfig", "LoggingConfig", "MetricsConfig",
    "ModelConfig", "MqttConfig", "OutputConfig", "PipelineConfig", "RegionConfig",
    "RegionModelConfig", "ShutdownConfig", "SourceConfig", "load_config", "parse_config",
    "sorting_root",
]

SourceConfig = Union[FolderSourceConfig, CameraSourceConfig]


@dataclass(frozen=True)
class AppConfig:
    """The whole config; ``path`` is the file it came from (None when built by ``parse_config``)."""
    model: ModelConfig
    sources: tuple[SourceConfig, ...]  # read by _parse_sources
    batch: BatchConfig
    pipeline: PipelineConfig
    output: OutputConfig  # read by parse_output
    metrics: MetricsConfig
    shutdown: ShutdownConfig
    logging: LoggingConfig
    path: Optional[Path] = None  # not a key: set by load_config


# The source types, keyed by the config's `type`; a new source kind adds its parser here.
_SOURCE_PARSERS: dict[str, Callable[[Section, str], SourceConfig]] = {
    "camera": parse_camera,
    "folder": parse_folder,
}


def _parse_source(s: Section) -> SourceConfig | None:
    name = read(s, BaseSourceConfig).name
    kind = s.raw("type")
    if kind in (ABSENT, None):
        s.error("type", "required")
        return None
    parse = _SOURCE_PARSERS.get(kind) if isinstance(kind, str) else None
    if parse is None:
        s.error("type", f"must be one of {', '.join(sorted(_SOURCE_PARSERS))}, got {show(kind)}")
        return None  # without a known type its other keys cannot be judged
    source = parse(s, name)
    s.finish()
    return source


def _parse_sources(s: Section) -> tuple[SourceConfig, ...]:
    raw = s.raw("sources")
    if raw in (ABSENT, None, []):
        s.error("sources", "required (at least one source)")
        return ()
    if not isinstance(raw, list):
        s.error("sources", f"must be a list of sources, got {show(raw)}")
        return ()
    sources: list[SourceConfig] = []
    first: dict[str, str] = {}
    for i, item in enumerate(raw):
        where = f"{s.key('sources')}[{i}]"
        source = _parse_source(s.child(where, item))
        if source is not None:
            sources.append(source)
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and first.setdefault(name, where) != where:
            s.error(f"sources[{i}].name", f"duplicate source name {name!r} (also {first[name]})")
    return tuple(sources)


def _check_output_dir(s: Section, cfg: AppConfig) -> None:
    # Result files written under a watched folder would come back as inputs.
    out = cfg.output.dir
    for src in cfg.sources:
        if isinstance(src, FolderSourceConfig) and parsed(out, src.path) and (
                out == src.path or (src.recursive and out.is_relative_to(src.path))):
            s.error("output.dir",
                    f"must not be inside the folder of source {src.name!r} ({src.path})")


def parse_config(data: Any, base_dir: Path, where: str = "config") -> AppConfig:
    """Validate a parsed YAML document; relative paths are taken against ``base_dir``.

    Raises ``InvalidConfig(where, problems)`` listing every problem found, each naming its key path.
    """
    problems: list[ConfigError] = []
    s = Section(data, "", problems, Path(os.path.abspath(Path(base_dir).expanduser())))
    cfg = read(s, AppConfig, sources=_parse_sources, path=lambda _: None,
               output=lambda o: o.section("output", parse_output))
    s.finish()
    _check_output_dir(s, cfg)
    if problems:
        raise InvalidConfig(where, problems)
    return cfg


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config file; raises ``InvalidConfig`` listing every problem."""
    data, file = load_yaml(path)
    return replace(parse_config(data, file.parent, where=str(path)), path=file)
