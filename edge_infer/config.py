"""The YAML config, parsed once into frozen dataclasses; every problem is reported with its key path."""
from __future__ import annotations

import os
import re
import string
from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

from .config_reader import ABSENT, Section, show
from .errors import ConfigError, InvalidConfig

AFTER_CHOICES = ("move", "delete", "keep")
LOG_LEVELS = ("debug", "info", "warning", "error")
NAME_PATTERN = re.compile(r"[a-z0-9_-]+")
TOPIC_FIELDS = ("device", "source")
DEVICE_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")  # one MQTT topic level: no /, + or #
ON_FULL_CHOICES = ("block", "drop_oldest")
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")  # pipeline.formats picks from these


@dataclass(frozen=True)
class ModelConfig:
    """The ONNX model; ``path=None`` is the embedded default model. ``threads`` are onnxruntime's intra-op
    threads for each batch; 0 shares the cores out among the batches run at once (see PipelineConfig)."""
    path: Path | None = None
    top_k: int = 5
    threads: int = 0


@dataclass(frozen=True)
class FolderSource:
    """A watched folder. ``polling`` is for network mounts without inotify."""
    name: str
    path: Path
    done_dir: Path | None
    failed_dir: Path
    type: Literal["folder"] = "folder"
    after: Literal["move", "delete", "keep"] = "move"
    recursive: bool = True
    polling: bool = False
    poll_interval_s: float = 1.0
    settle_s: float = 0.5  # polling: a file is complete once its size and mtime hold still this long


@dataclass(frozen=True)
class CameraSource:
    """A camera or stream (RTSP, HTTP(S), /dev/videoN, a video file), sampled at ``fps`` frames per second."""
    name: str
    url: str  # a local video file is stored as an absolute path
    type: Literal["camera"] = "camera"
    fps: float = 2.0
    transport: Literal["tcp", "udp"] = "tcp"  # RTSP only; TCP survives lossy links and NAT
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    reconnect_min_s: float = 1.0  # backoff after a failure doubles from here, with jitter...
    reconnect_max_s: float = 30.0  # ...up to here
    stall_after_s: float = 10.0  # no frame for this long: the feed counts as down and is reopened
    frozen_after_s: float = 30.0  # identical frames for this long: reported as frozen
    loop: bool = True  # video files: start again at the end
    video_size: str | None = None  # V4L2: "640x480"
    input_format: str | None = None  # V4L2: "mjpeg", "yuyv422", ...
    rotate_bytes: int = 16 * 1024 * 1024  # JSON Lines results: a new file past this size (and each day)
    keep_files: int = 10  # JSON Lines files kept per camera


SourceConfig = Union[FolderSource, CameraSource]


@dataclass(frozen=True)
class BatchConfig:
    # Measured on two cores (edge-infer bench --daemon batch=2 --daemon batch=3 --daemon batch=4 ...): each
    # image of batch capacity costs about 4 MB of onnxruntime activations per inference thread. With two
    # inference threads, 2 keeps the daemon near 113 MB; 3 and 4 reach 118-124 MB (over the 120 MB budget)
    # for 0-4% more throughput.
    max_size: int = 2
    max_wait_ms: float = 10.0


@dataclass(frozen=True)
class PipelineConfig:
    """``workers=0`` is one per CPU core: decoding large photos needs every core (one worker on two cores
    gave 6.3x the naive loop on 12 MP JPEGs against 9.1x for two).

    ``inference_threads`` batches run at once, each on its own thread, sharing one model; 0 is two on two
    or more cores. Two single-threaded runs keep both cores of a two-core machine busy where one run on
    two threads leaves them waiting for each other at every layer (measured 78-90% of the machine's limit
    with one, 89-96% with two: see README, End to end); each costs its own activations (4 MB per image of
    ``batch.max_size``).
    """
    queue_size: int = 64
    workers: int = 0
    inference_threads: int = 0
    max_pixels: int = 50_000_000
    max_file_bytes: int = 104_857_600
    # model/decode.py's defaults (which it explains), repeated so that reading a config never imports
    # Pillow (the CLI starts without it); test_config checks that they agree.
    max_decode_mb: int = 256
    formats: tuple[str, ...] = IMAGE_FORMATS


@dataclass(frozen=True)
class MqttConfig:
    """The fleet sink. ``device=None`` is the host name; ``spool_dir=None`` is ``<output.dir>/.mqtt-spool``.

    The password is never in the config: ``password_file`` names a file holding it.
    """
    host: str
    port: int = 1883
    topic: str = "edge-infer/{device}/{source}/results"
    qos: int = 1
    device: str | None = None
    client_id: str | None = None  # None: "edge-infer-<device>"
    status_topic: str = "edge-infer/{device}/status"  # retained online/offline, offline also as the last will
    username: str | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None  # TLS: None trusts the system's CAs
    cert_file: Path | None = None  # TLS client certificate (with key_file)
    key_file: Path | None = None
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    reconnect_max_s: float = 30.0  # reconnect backoff doubles from 0.5 s up to this
    max_inflight: int = 20  # published and not yet acknowledged by the broker
    spool_dir: Path | None = None
    spool_max_bytes: int = 64 * 1024 * 1024
    on_full: Literal["block", "drop_oldest"] = "block"


@dataclass(frozen=True)
class OutputConfig:
    dir: Path
    mqtt: MqttConfig | None = None


@dataclass(frozen=True)
class MetricsConfig:
    """``port=0`` binds any free port (for tests)."""
    host: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class ShutdownConfig:
    drain_timeout_s: float = 20.0


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class AppConfig:
    """The whole config; ``path`` is the file it came from (None when built by ``parse_config``)."""
    model: ModelConfig
    sources: tuple[SourceConfig, ...]
    batch: BatchConfig
    pipeline: PipelineConfig
    output: OutputConfig
    metrics: MetricsConfig
    shutdown: ShutdownConfig
    logging: LoggingConfig
    path: Path | None = None


def _known(*paths: Path | None) -> bool:
    """True when every path parsed (a missing or invalid one is None or ``UNSET``)."""
    return all(p is not None and p.is_absolute() for p in paths)


def _parse_folder(s: Section, name: str) -> FolderSource:
    path = s.path("path")
    after = s.choice("after", FolderSource.after, AFTER_CHOICES)
    done = s.optional_path("done_dir", required=after == "move")
    failed = s.path("failed_dir")
    recursive = s.flag("recursive", FolderSource.recursive)
    # done_dir only matters when files are moved there.
    for key, d in (("done_dir", done if after == "move" else None), ("failed_dir", failed)):
        if not _known(d, path):
            continue
        if d == path:
            s.error(key, f"must not be the same folder as path ({path})")
        elif recursive and d.is_relative_to(path):
            s.error(key, f"must not be inside path ({path}) when recursive: it would re-process its own output")
    if after == "move" and _known(done, failed) and failed == done:
        s.error("failed_dir", f"must not be the same folder as done_dir ({done})")
    return FolderSource(name=name, path=path, done_dir=done, failed_dir=failed, after=after, recursive=recursive,
                        polling=s.flag("polling", FolderSource.polling),
                        poll_interval_s=s.number("poll_interval_s", FolderSource.poll_interval_s, gt=0),
                        settle_s=s.number("settle_s", FolderSource.settle_s, ge=0))


_SIZE = re.compile(r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}")


def _camera_url(s: Section) -> str:
    url = s.text("url")
    if url and "://" not in url and not url.startswith("/dev/"):
        return os.path.normpath(s.base_dir / Path(url).expanduser())  # a video file, relative to the config
    return url


def _parse_camera(s: Section, name: str) -> CameraSource:
    c = CameraSource
    optional = {k: (s.text(k, pattern=_SIZE if k == "video_size" else None) if s.raw(k) not in (ABSENT, None) else None)
                for k in ("video_size", "input_format")}
    cam = CameraSource(
        name=name, url=_camera_url(s), fps=s.number("fps", c.fps, gt=0, le=60),
        transport=s.choice("transport", c.transport, ("tcp", "udp")),
        open_timeout_s=s.number("open_timeout_s", c.open_timeout_s, gt=0, le=300),
        read_timeout_s=s.number("read_timeout_s", c.read_timeout_s, gt=0, le=300),
        reconnect_min_s=s.number("reconnect_min_s", c.reconnect_min_s, gt=0),
        reconnect_max_s=s.number("reconnect_max_s", c.reconnect_max_s, gt=0),
        stall_after_s=s.number("stall_after_s", c.stall_after_s, gt=0),
        frozen_after_s=s.number("frozen_after_s", c.frozen_after_s, gt=0),
        loop=s.flag("loop", c.loop), video_size=optional["video_size"], input_format=optional["input_format"],
        rotate_bytes=s.integer("rotate_bytes", c.rotate_bytes, ge=4096),
        keep_files=s.integer("keep_files", c.keep_files, ge=1, le=10000))
    if cam.reconnect_max_s < cam.reconnect_min_s:
        s.error("reconnect_max_s", f"must be >= reconnect_min_s ({cam.reconnect_min_s}), got {cam.reconnect_max_s}")
    return cam


# The source types, keyed by the config's `type`; a new source kind adds its parser here.
_SOURCE_PARSERS: dict[str, Callable[[Section, str], SourceConfig]] = {
    "camera": _parse_camera,
    "folder": _parse_folder,
}


def _parse_source(s: Section) -> SourceConfig | None:
    name = s.text("name", pattern=NAME_PATTERN)
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
        if isinstance(name, str) and name in first:
            s.error(f"sources[{i}].name", f"duplicate source name {name!r} (also {first[name]})")
        elif isinstance(name, str):
            first[name] = where
    return tuple(sources)


def _topic(s: Section, key: str, default: str, allowed: tuple[str, ...]) -> str:
    topic = s.text(key, default)
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(topic) if f is not None}
    except ValueError:  # an unbalanced brace
        fields = {"{"}
    if not fields <= set(allowed):
        names = " and ".join(f"{{{f}}}" for f in allowed)
        s.error(key, f"may only use the placeholder{'s' if len(allowed) > 1 else ''} {names}, got {topic!r}")
    if "+" in topic or "#" in topic:  # wildcards are for subscribing; a broker rejects them in a publish
        s.error(key, f"must not contain the MQTT wildcards + or #, got {topic!r}")
    return topic


def _parse_mqtt(s: Section) -> MqttConfig:
    m = MqttConfig
    if s.raw("password") is not ABSENT:
        s.error("password", "not allowed in the config: put the password in a file only the service can read "
                            "and name that file in password_file")
    optional = {k: s.text(k) if s.raw(k) not in (ABSENT, None) else None for k in ("device", "client_id", "username")}
    if optional["device"] and not DEVICE_PATTERN.fullmatch(optional["device"]):
        s.error("device", f"must match {DEVICE_PATTERN.pattern} (one topic level), got {optional['device']!r}")
    cfg = MqttConfig(
        host=s.text("host"), port=s.integer("port", m.port, ge=1, le=65535),
        topic=_topic(s, "topic", m.topic, TOPIC_FIELDS), qos=s.choice("qos", m.qos, (0, 1, 2)),
        device=optional["device"], client_id=optional["client_id"],
        status_topic=_topic(s, "status_topic", m.status_topic, ("device",)),
        username=optional["username"], password_file=s.optional_path("password_file"),
        tls=s.flag("tls", m.tls), ca_file=s.optional_path("ca_file"), cert_file=s.optional_path("cert_file"),
        key_file=s.optional_path("key_file"),
        keepalive_s=s.integer("keepalive_s", m.keepalive_s, ge=5, le=3600),
        connect_timeout_s=s.number("connect_timeout_s", m.connect_timeout_s, gt=0, le=300),
        reconnect_max_s=s.number("reconnect_max_s", m.reconnect_max_s, ge=0.5, le=3600),
        max_inflight=s.integer("max_inflight", m.max_inflight, ge=1, le=1000),
        spool_dir=s.optional_path("spool_dir"),
        spool_max_bytes=s.integer("spool_max_bytes", m.spool_max_bytes, ge=64 * 1024),
        on_full=s.choice("on_full", m.on_full, ON_FULL_CHOICES))
    if cfg.password_file is not None and cfg.username is None:
        s.error("password_file", "needs username")
    for key in ("ca_file", "cert_file", "key_file"):
        if getattr(cfg, key) is not None and not cfg.tls:
            s.error(key, "needs tls: true")
    if (cfg.cert_file is None) != (cfg.key_file is None):
        s.error("key_file" if cfg.key_file is None else "cert_file", "cert_file and key_file go together")
    return cfg


def _parse_output(s: Section) -> OutputConfig:
    mqtt = None if s.raw("mqtt") in (ABSENT, None) else s.section("mqtt", _parse_mqtt)
    return OutputConfig(dir=s.path("dir"), mqtt=mqtt)


def _check_output_dir(s: Section, cfg: AppConfig) -> None:
    # Result files written under a watched folder would come back as inputs.
    out = cfg.output.dir
    for src in cfg.sources:
        if isinstance(src, FolderSource) and _known(out, src.path) and (
                out == src.path or (src.recursive and out.is_relative_to(src.path))):
            s.error("output.dir", f"must not be inside the folder of source {src.name!r} ({src.path})")


def parse_config(data: Any, base_dir: Path, where: str = "config") -> AppConfig:
    """Validate a parsed YAML document; relative paths are taken against ``base_dir``.

    Raises ``InvalidConfig(where, problems)`` listing every problem found, each naming its key path.
    """
    problems: list[ConfigError] = []
    s = Section(data, "", problems, Path(os.path.abspath(Path(base_dir).expanduser())))
    cfg = AppConfig(
        model=s.section("model", lambda m: ModelConfig(
            path=m.optional_path("path"), top_k=m.integer("top_k", ModelConfig.top_k, ge=1, le=1000),
            threads=m.integer("threads", ModelConfig.threads, ge=0, le=64))),
        sources=_parse_sources(s),
        batch=s.section("batch", lambda b: BatchConfig(
            max_size=b.integer("max_size", BatchConfig.max_size, ge=1, le=256),
            max_wait_ms=b.number("max_wait_ms", BatchConfig.max_wait_ms, ge=0, le=10000))),
        pipeline=s.section("pipeline", lambda p: PipelineConfig(
            queue_size=p.integer("queue_size", PipelineConfig.queue_size, ge=1, le=100_000),
            workers=p.integer("workers", PipelineConfig.workers, ge=0, le=64),
            inference_threads=p.integer("inference_threads", PipelineConfig.inference_threads, ge=0, le=16),
            max_pixels=p.integer("max_pixels", PipelineConfig.max_pixels, ge=1),
            max_file_bytes=p.integer("max_file_bytes", PipelineConfig.max_file_bytes, ge=1),
            max_decode_mb=p.integer("max_decode_mb", PipelineConfig.max_decode_mb, ge=1),
            formats=p.choices("formats", PipelineConfig.formats, IMAGE_FORMATS))),
        output=s.section("output", _parse_output),
        metrics=s.section("metrics", lambda m: MetricsConfig(
            host=m.text("host", MetricsConfig.host), port=m.integer("port", MetricsConfig.port, ge=0, le=65535))),
        shutdown=s.section("shutdown", lambda d: ShutdownConfig(
            drain_timeout_s=d.number("drain_timeout_s", ShutdownConfig.drain_timeout_s, gt=0))),
        logging=s.section("logging", lambda g: LoggingConfig(level=g.choice("level", LoggingConfig.level, LOG_LEVELS))),
    )
    s.finish()
    _check_output_dir(s, cfg)
    if problems:
        raise InvalidConfig(where, problems)
    return cfg


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML would otherwise resolve silently to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # overriding a merged (<<) key is legitimate
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # super() reports it
            if key in seen:
                raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                        f"found duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config file; raises ``InvalidConfig`` listing every problem."""
    def fail(message: str) -> InvalidConfig:
        return InvalidConfig(str(path), [ConfigError("<file>", message)])

    try:
        file = Path(os.path.abspath(Path(path).expanduser()))
        text = file.read_text(encoding="utf-8-sig")  # -sig: tolerate the BOM some Windows editors write
    except (OSError, RuntimeError) as e:
        raise fail(f"cannot read: {getattr(e, 'strerror', None) or e}") from e
    except UnicodeDecodeError as e:
        raise fail(f"not UTF-8 text: {e}") from e
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        raise fail(f"invalid YAML: {e}") from e
    return replace(parse_config(data, file.parent, where=str(path)), path=file)
