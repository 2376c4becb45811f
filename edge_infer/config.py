"""The YAML config, parsed once into frozen dataclasses; every problem is reported with its key path.

Longer than 300 lines: every key's schema, one line each, kept in one place rather than split by section."""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from .config_reader import ABSENT, REQUIRED, Section, load_yaml, parsed, read, setting, show
from .errors import ConfigError, InvalidConfig

DEVICE_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")  # one MQTT topic level: no /, + or #
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")  # pipeline.formats picks from these

# Each field is declared once, with setting(default, doc, rule), and read() reads every field by it. Optional
# fields are written Optional[...], not "X | None": read() resolves the annotations with get_type_hints, which
# cannot evaluate "X | None" on Python 3.9.


@dataclass(frozen=True)
class ModelConfig:
    """The ONNX model."""
    path: Optional[Path] = setting(None, "a .onnx model with model.json beside it; None: the embedded one")
    top_k: int = setting(5, "predictions per result", ge=1, le=1000)
    threads: int = setting(0, "onnxruntime intra-op threads per batch; 0: the cores shared out among the batches "
                              "run at once (see PipelineConfig)", ge=0, le=64)


@dataclass(frozen=True)
class _Source:
    """What every source has; read before its type is known, so that its problems are reported either way."""
    name: str = setting(REQUIRED, "unique among the sources", pattern=r"[a-z0-9_-]+")


@dataclass(frozen=True)
class FolderSource(_Source):
    """A watched folder. ``polling`` is for network mounts without inotify."""
    path: Path = setting(REQUIRED, "the watched folder")
    done_dir: Optional[Path] = setting(REQUIRED, "where processed inputs go; required for after: move; {label}: "
                                                 "the top-1 label (a folder per class)", placeholders=("label",))
    failed_dir: Path = setting(REQUIRED, "where failed inputs go, each with its error record")
    type: Literal["folder"] = setting("folder", "the source type")
    after: Literal["move", "delete", "keep"] = setting("move", "what becomes of an input once its result is durable")
    recursive: bool = setting(True, "watch sub-folders too")
    polling: bool = setting(False, "poll instead of inotify (network mounts)")
    poll_interval_s: float = setting(1.0, "polling period", gt=0)
    settle_s: float = setting(0.5, "polling: a file is complete once its size and mtime hold still this long", ge=0)
    rescan_interval_s: float = setting(60.0, "period of the reconciliation scan (finds what events "
                                             "missed)", gt=0)
    min_score: float = setting(0.0, "with {label} in done_dir: a top-1 score below this files the input under "
                                    "unsure", ge=0, le=1)


@dataclass(frozen=True)
class RegionModel:
    path: Path = setting(REQUIRED, "a .onnx model with model.json beside it (edge-infer train makes one)")


@dataclass(frozen=True)
class Region:
    """A part of a camera's frames watched for a state (see README, Camera regions)."""
    name: str = setting(REQUIRED, "unique within its camera", pattern=r"[a-z0-9_-]+")
    crop: tuple[float, float, float, float] = setting((0.0, 0.0, 1.0, 1.0), "[x1, y1, x2, y2]: whole pixels, or "
                                                      "fractions of the frame when all are at most 1 (_parse_crop)")
    model: Optional[RegionModel] = None  # read as an optional section; None: the daemon's model
    states: tuple[str, ...] = setting((), "the model's labels that are states, others never count; none: every "
                                          "label (_parse_states)")
    threshold: float = setting(0.8, "a frame's top-1 counts towards a state only at or above this score", ge=0, le=1)
    confirm_frames: int = setting(3, "consecutive agreeing frames that confirm a new state", ge=1, le=1000)
    sample_below: float = setting(0.95, "samples_dir: frames scoring below this are kept as samples", ge=0, le=1)
    samples_per_hour: int = setting(60, "samples_dir: at most this many samples an hour", ge=0, le=100_000)
    key: str = ""  # not a key: where it was read from ("sources[1].regions[0]"), to name it in later errors


@dataclass(frozen=True)
class CameraSource(_Source):
    """A camera or stream (RTSP, HTTP(S), /dev/videoN, a video file), sampled at ``fps`` frames per second."""
    url: str = setting(REQUIRED, "the stream; a local video file is stored as an absolute path")
    type: Literal["camera"] = setting("camera", "the source type")
    fps: float = setting(2.0, "frames classified per second", gt=0, le=60)
    transport: Literal["tcp", "udp"] = setting("tcp", "RTSP only; TCP survives lossy links and NAT")
    open_timeout_s: float = setting(10.0, "bound on opening the stream", gt=0, le=300)
    read_timeout_s: float = setting(5.0, "bound on each read", gt=0, le=300)
    reconnect_min_s: float = setting(1.0, "backoff after a failure doubles from here, with jitter...", gt=0)
    reconnect_max_s: float = setting(30.0, "...up to here", gt=0)
    stall_after_s: float = setting(10.0, "no frame for this long: the feed counts as down and is reopened", gt=0)
    frozen_after_s: float = setting(30.0, "identical frames for this long: reported as frozen", gt=0)
    loop: bool = setting(True, "video files: start again at the end")
    video_size: Optional[str] = setting(None, 'V4L2: "640x480"', pattern=r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}")
    input_format: Optional[str] = setting(None, 'V4L2: "mjpeg", "yuyv422", ...')
    rotate_bytes: int = setting(16 << 20, "JSON Lines results: a new file past this size (and each day)", ge=4096)
    keep_files: int = setting(10, "JSON Lines files kept per camera", ge=1, le=10000)
    regions: tuple[Region, ...] = ()  # read by _parse_regions
    frames: Optional[str] = setting(None, "JSON Lines: a line per frame (all) or only region state changes "
                                          "(changes); None: changes with regions, else all", pattern=r"all|changes")
    samples_dir: Optional[Path] = setting(None, "regions: crops kept for training, <dir>/<region>/<state>/")
    samples_max_files: int = setting(1000, "samples_dir: files kept per region, oldest removed first", ge=1)
    samples_max_bytes: int = setting(64 << 20, "samples_dir: bytes kept per region, oldest removed first", ge=4096)

    @property
    def every_frame(self) -> bool:
        """A JSON Lines line for every frame (frames: all), not only region changes."""
        return (self.frames or ("changes" if self.regions else "all")) == "all"


SourceConfig = Union[FolderSource, CameraSource]


@dataclass(frozen=True)
class BatchConfig:
    # Measured on two cores (edge-infer bench --daemon batch=2 --daemon batch=3 --daemon batch=4 ...): each
    # image of batch capacity costs about 4 MB of onnxruntime activations per inference thread. With two
    # inference threads, 2 keeps the daemon near 113 MB; 3 and 4 reach 118-124 MB (over the 120 MB budget)
    # for 0-4% more throughput.
    max_size: int = setting(2, "images per inference", ge=1, le=256)
    max_wait_ms: float = setting(10.0, "how long the batcher waits for more images after the first", ge=0, le=10000)


@dataclass(frozen=True)
class PipelineConfig:
    """``workers=0`` is one per CPU core, each with its decoder: decoding large photos needs every core.
    ``inference_threads`` batches run at once, each on its own thread, sharing one model; 0 is two on two
    or more cores. Two single-threaded runs keep both cores of a two-core machine busy where one run on
    two threads leaves them waiting for each other at every layer (measured 78-90% of the machine's limit
    with one, 89-96% with two: see README, End to end); each costs its own activations (4 MB per image of
    ``batch.max_size``).
    """
    queue_size: int = setting(64, "bound of the job queue (backpressure)", ge=1, le=100_000)
    workers: int = setting(0, "preprocessing threads; 0: one per core", ge=0, le=64)
    inference_threads: int = setting(0, "batches run at once; 0: two on two or more cores", ge=0, le=16)
    max_pixels: int = setting(50_000_000, "larger images fail as too_large before they are decoded", ge=1)
    max_file_bytes: int = setting(104_857_600, "larger files fail as too_large before they are read", ge=1)
    decoders: Literal["process", "thread"] = setting("process", "decoding in sandboxed processes, or in threads")
    decode_timeout_s: float = setting(15.0, "a decode taking longer fails as timeout; its process is replaced",
                                      gt=0, le=3600)
    # decoding/decode.py's defaults (which it explains), repeated so that reading a config never imports
    # Pillow (the CLI starts without it); test_config checks that they agree.
    max_decode_mb: int = setting(256, "images needing more to decode fail as too_large, from the header", ge=1)
    formats: tuple[str, ...] = setting(IMAGE_FORMATS, "the image formats decoded; anything else is unsupported",
                                       choices=IMAGE_FORMATS)


@dataclass(frozen=True)
class MqttConfig:
    """The fleet sink. The password is never in the config: ``password_file`` names a file holding it."""
    host: str = setting(REQUIRED, "the broker")
    port: int = setting(1883, "the broker's port", ge=1, le=65535)
    topic: str = setting("edge-infer/{device}/{source}/results", "where results go",
                         placeholders=("device", "source"))
    qos: int = setting(1, "MQTT quality of service", choices=(0, 1, 2))
    device: Optional[str] = setting(None, "this device's name in topics; None: the host name")
    client_id: Optional[str] = setting(None, "None: edge-infer-<device>-<8 hex digits from the machine id>")
    status_topic: str = setting("edge-infer/{device}/status", "retained online/offline, offline also as the last will",
                                placeholders=("device",))
    username: Optional[str] = setting(None, "broker login")
    password_file: Optional[Path] = setting(None, "a file holding the password (its first line)")
    allow_insecure_login: bool = setting(False, "allow username + password_file without tls (sent in clear)")
    tls: bool = setting(False, "connect with TLS")
    ca_file: Optional[Path] = setting(None, "TLS: None trusts the system's CAs")
    cert_file: Optional[Path] = setting(None, "TLS client certificate (with key_file)")
    key_file: Optional[Path] = setting(None, "TLS client key (with cert_file)")
    keepalive_s: int = setting(30, "MQTT keepalive", ge=5, le=3600)
    connect_timeout_s: float = setting(10.0, "bound on one connection attempt", gt=0, le=300)
    reconnect_max_s: float = setting(30.0, "reconnect backoff doubles from 0.5 s up to this", ge=0.5, le=3600)
    max_inflight: int = setting(20, "published and not yet acknowledged by the broker", ge=1, le=1000)
    spool_dir: Optional[Path] = setting(None, "results not yet acknowledged; None: <output.dir>/.mqtt-spool")
    spool_max_bytes: int = setting(64 * 1024 * 1024, "the spool's bound", ge=64 * 1024)
    on_full: Literal["block", "drop_oldest"] = setting("block", "what a full spool does")
    state_topic: str = setting("edge-infer/{device}/{source}/{region}/state", "camera regions: the state, retained",
                               placeholders=("device", "source", "region"))
    events_topic: str = setting("edge-infer/{device}/{source}/{region}/events", "camera regions: each change",
                                placeholders=("device", "source", "region"))
    homeassistant: bool = setting(False, "announce each camera region to Home Assistant (MQTT discovery)")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery prefix", pattern=r"[A-Za-z0-9_/-]+")


@dataclass(frozen=True)
class OutputConfig:
    dir: Path = setting(REQUIRED, "results go to <dir>/<source>/<relative path>.json")
    mqtt: Optional[MqttConfig] = None  # read by _parse_output


@dataclass(frozen=True)
class MetricsConfig:
    host: str = setting("127.0.0.1", "the HTTP port's address")
    port: int = setting(9464, "the HTTP port (/metrics, /healthz, /readyz); 0: any free one (tests)", ge=0, le=65535)
    web_config: Optional[Path] = setting(None, "TLS and basic auth, in the exporter-toolkit's format (README)")
    max_connections: int = setting(8, "connections served at once; more are refused at once", ge=1, le=1024)
    request_timeout_s: float = setting(10.0, "bound on receiving one request, TLS handshake included", gt=0, le=300)
    max_label_classes: int = setting(100, "edge_infer_predictions_total{source,label} only for models with at most "
                                          "this many classes (one series per class and source)", ge=0, le=10000)


@dataclass(frozen=True)
class ShutdownConfig:
    drain_timeout_s: float = setting(20.0, "on SIGTERM, how long in-flight work may take to finish", gt=0)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = setting("info", "the lowest level logged")


@dataclass(frozen=True)
class AppConfig:
    """The whole config; ``path`` is the file it came from (None when built by ``parse_config``)."""
    model: ModelConfig
    sources: tuple[SourceConfig, ...]  # read by _parse_sources
    batch: BatchConfig
    pipeline: PipelineConfig
    output: OutputConfig  # read by _parse_output
    metrics: MetricsConfig
    shutdown: ShutdownConfig
    logging: LoggingConfig
    path: Optional[Path] = None  # not a key: set by load_config


LABEL_FIELD = "{label}"  # in a folder source's done_dir: one folder per top-1 label (sinks/filing.sorted_dir)


def sorting_root(done_dir: Path) -> Path:
    """The folder that holds a ``{label}`` done_dir's class folders (``done_dir`` itself without one)."""
    while LABEL_FIELD in str(done_dir):
        done_dir = done_dir.parent
    return done_dir


def _parse_folder(s: Section, name: str) -> FolderSource:
    src = read(s, FolderSource, name=lambda _: name)
    path, failed = src.path, src.failed_dir
    sorts = src.done_dir is not None and LABEL_FIELD in str(src.done_dir)
    done = sorting_root(src.done_dir) if parsed(src.done_dir) and src.done_dir is not None else src.done_dir
    if src.after == "move" and s.raw("done_dir") in (ABSENT, None):
        s.error("done_dir", "required")
    if sorts and src.after != "move":
        s.error("done_dir", f"{LABEL_FIELD} sorts the inputs moved there: it needs after: move, not {src.after}")
    if src.min_score > 0 and not sorts:
        s.error("min_score", f"only sorts inputs into unsure with {LABEL_FIELD} in done_dir")
    if sorts and src.after == "move" and parsed(done, failed) and failed.is_relative_to(done):
        s.error("failed_dir", f"must not be inside {done}, which holds done_dir's class folders: a class of that "
                              "name would share it")
    # done_dir only matters when files are moved there.
    for key, d in (("done_dir", done if src.after == "move" else None), ("failed_dir", failed)):
        if not parsed(d, path):
            continue
        if d == path:
            s.error(key, f"must not be the same folder as path ({path})")
        elif src.recursive and d.is_relative_to(path):
            s.error(key, f"must not be inside path ({path}) when recursive: it would re-process its own output")
    if src.after == "move" and not sorts and parsed(done, failed) and failed == done:
        s.error("failed_dir", f"must not be the same folder as done_dir ({done})")
    return src


def _camera_url(s: Section) -> str:
    url = s.text("url")
    if url and "://" not in url and not url.startswith("/dev/"):
        return os.path.normpath(s.base_dir / Path(url).expanduser())  # a video file, relative to the config
    return url


def _parse_crop(s: Section) -> tuple[float, float, float, float]:
    """[x1, y1, x2, y2]: fractions of the frame when every value is at most 1, else whole pixels."""
    v = s.raw("crop")
    whole: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    if v is ABSENT:
        return whole
    if (not isinstance(v, list) or len(v) != 4
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
        s.error("crop", f"must be [x1, y1, x2, y2] (pixels, or fractions of the frame), got {show(v)}")
        return whole
    if min(v) < 0:
        s.error("crop", f"must not be negative, got {show(v)}")
    elif max(v) > 1 and not all(float(x).is_integer() for x in v):
        s.error("crop", f"must be whole pixels, or fractions of the frame all within [0, 1], got {show(v)}")
    elif not (v[0] < v[2] and v[1] < v[3]):
        s.error("crop", f"must have x1 < x2 and y1 < y2, got {show(v)}")
    else:
        return (float(v[0]), float(v[1]), float(v[2]), float(v[3]))
    return whole


def _parse_states(s: Section) -> tuple[str, ...]:
    v = s.raw("states")
    if v in (ABSENT, None):
        return ()
    if not isinstance(v, list) or len(v) < 2 or not all(isinstance(x, str) and x.strip() for x in v):
        s.error("states", f"must be a list of at least two labels of the region's model, got {show(v)}")
        return ()
    if "unknown" in v:
        s.error("states", "must not name unknown: it is the state before the first confirmation")
    elif len(set(v)) != len(v):
        s.error("states", f"must not repeat a state, got {show(v)}")
    return tuple(v)


def _parse_region(s: Section) -> Region:
    region = read(s, Region, crop=_parse_crop, states=_parse_states, key=lambda r: r.where,
                  model=lambda r: r.optional_section("model", lambda m: read(m, RegionModel)))
    s.finish()
    return region


def _parse_regions(s: Section) -> tuple[Region, ...]:
    raw = s.raw("regions")
    if raw in (ABSENT, None):
        return ()
    if not isinstance(raw, list) or not raw:
        s.error("regions", f"must be a non-empty list of regions, got {show(raw)}")
        return ()
    regions = tuple(_parse_region(s.child(f"{s.key('regions')}[{i}]", item)) for i, item in enumerate(raw))
    names = [r.name for r in regions]
    for i, name in enumerate(names):
        if name and name in names[:i]:
            s.error(f"regions[{i}].name", f"duplicate region name {name!r}")
    return regions


def _parse_camera(s: Section, name: str) -> CameraSource:
    cam = read(s, CameraSource, name=lambda _: name, url=_camera_url, regions=_parse_regions)
    if cam.reconnect_max_s < cam.reconnect_min_s:
        s.error("reconnect_max_s", f"must be >= reconnect_min_s ({cam.reconnect_min_s}), got {cam.reconnect_max_s}")
    if cam.frames == "changes" and not cam.regions:
        s.error("frames", "changes: only the changes of regions are written, and this camera has no regions")
    if cam.samples_dir is not None and not cam.regions:
        s.error("samples_dir", "keeps crops of regions, and this camera has no regions")
    return cam


# The source types, keyed by the config's `type`; a new source kind adds its parser here.
_SOURCE_PARSERS: dict[str, Callable[[Section, str], SourceConfig]] = {
    "camera": _parse_camera,
    "folder": _parse_folder,
}


def _parse_source(s: Section) -> SourceConfig | None:
    name = read(s, _Source).name
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


def _parse_mqtt(s: Section) -> MqttConfig:
    if s.raw("password") is not ABSENT:
        s.error("password", "not allowed in the config: put the password in a file only the service can read "
                            "and name that file in password_file")
    cfg = read(s, MqttConfig)
    if cfg.device and not DEVICE_PATTERN.fullmatch(cfg.device):
        s.error("device", f"must match {DEVICE_PATTERN.pattern} (one topic level), got {cfg.device!r}")
    for key, topic in (("topic", cfg.topic), ("status_topic", cfg.status_topic), ("state_topic", cfg.state_topic),
                       ("events_topic", cfg.events_topic)):
        if "+" in topic or "#" in topic:  # wildcards are for subscribing; a broker rejects them in a publish
            s.error(key, f"must not contain the MQTT wildcards + or #, got {topic!r}")
    if cfg.password_file is not None and cfg.username is None:
        s.error("password_file", "needs username")
    elif cfg.password_file is not None and not (cfg.tls or cfg.allow_insecure_login):
        s.error("password_file", "would be sent in clear without tls: true (allow_insecure_login: true allows it)")
    for key in ("ca_file", "cert_file", "key_file"):
        if getattr(cfg, key) is not None and not cfg.tls:
            s.error(key, "needs tls: true")
    if (cfg.cert_file is None) != (cfg.key_file is None):
        s.error("key_file" if cfg.key_file is None else "cert_file", "cert_file and key_file go together")
    return cfg


def _parse_output(s: Section) -> OutputConfig:
    return read(s, OutputConfig, mqtt=lambda o: o.optional_section("mqtt", _parse_mqtt))


def _check_output_dir(s: Section, cfg: AppConfig) -> None:
    # Result files written under a watched folder would come back as inputs.
    out = cfg.output.dir
    for src in cfg.sources:
        if isinstance(src, FolderSource) and parsed(out, src.path) and (
                out == src.path or (src.recursive and out.is_relative_to(src.path))):
            s.error("output.dir", f"must not be inside the folder of source {src.name!r} ({src.path})")


def parse_config(data: Any, base_dir: Path, where: str = "config") -> AppConfig:
    """Validate a parsed YAML document; relative paths are taken against ``base_dir``.

    Raises ``InvalidConfig(where, problems)`` listing every problem found, each naming its key path.
    """
    problems: list[ConfigError] = []
    s = Section(data, "", problems, Path(os.path.abspath(Path(base_dir).expanduser())))
    cfg = read(s, AppConfig, sources=_parse_sources, output=lambda o: o.section("output", _parse_output),
               path=lambda _: None)
    s.finish()
    _check_output_dir(s, cfg)
    if problems:
        raise InvalidConfig(where, problems)
    return cfg


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML config file; raises ``InvalidConfig`` listing every problem."""
    data, file = load_yaml(path)
    return replace(parse_config(data, file.parent, where=str(path)), path=file)
