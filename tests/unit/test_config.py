"""The YAML config: real files in tmp_path, every problem named by its key path."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from edge_infer.config import (AppConfig, BatchConfig, CameraSourceConfig, FolderSourceConfig,
                               LoggingConfig, MetricsConfig, ModelConfig, MqttConfig, PipelineConfig,
                               ShutdownConfig, load_config, parse_config)
from edge_infer.errors import ConfigError, InvalidConfig

# The example from docs/contract.md, verbatim.
CONTRACT_EXAMPLE = """\
model:
  path: null            # null: the embedded default model (its manifest sits beside it)
  top_k: 5
sources:
  - name: drops         # unique, [a-z0-9_-]+
    type: folder
    path: var/inbox
    after: move         # move | delete | keep
    done_dir: var/done
    failed_dir: var/failed
  - name: cam0
    type: camera
    url: rtsp://127.0.0.1:8554/cam    # or /dev/video0, http(s) MJPEG, or a video file
    fps: 2              # frames sampled per second
batch:
  max_size: 8
  max_wait_ms: 10
output:
  dir: var/results
  mqtt:                 # optional (the fleet sink)
    host: 127.0.0.1
    port: 1883
    topic: "edge-infer/{device}/{source}/results"
    qos: 1
metrics:
  host: 127.0.0.1
  port: 9464
"""


def minimal() -> dict[str, Any]:
    """The smallest valid config: one folder source (index 0) and one camera (index 1)."""
    return {
        "sources": [
            {"name": "drops", "type": "folder", "path": "in", "done_dir": "done", "failed_dir": "failed"},
            {"name": "cam0", "type": "camera", "url": "rtsp://127.0.0.1:8554/cam"},
        ],
        "output": {"dir": "results"},
    }


def write(tmp_path: Path, content: str | dict[str, Any], name: str = "edge-infer.yaml") -> Path:
    folder = tmp_path / "etc"
    folder.mkdir(exist_ok=True)
    f = folder / name
    f.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return f


def problems_of(tmp_path: Path, content: str | dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidConfig) as info:
        load_config(write(tmp_path, content))
    assert all(isinstance(p, ConfigError) for p in info.value.problems)
    return [(p.key, p.message) for p in info.value.problems]


def edited(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    cfg = minimal()
    change(cfg)
    return cfg


def test_contract_example_parses_and_paths_resolve_against_the_config_folder(tmp_path):
    f = write(tmp_path, CONTRACT_EXAMPLE)
    cfg = load_config(f)
    etc = tmp_path / "etc"
    assert cfg.path == f
    assert cfg.model == ModelConfig(path=None, top_k=5, threads=0)
    drops, cam = cfg.sources
    assert drops == FolderSourceConfig(name="drops", path=etc / "var/inbox",
                                       done_dir=etc / "var/done", failed_dir=etc / "var/failed",
                                       after="move")
    assert cam == CameraSourceConfig(name="cam0", url="rtsp://127.0.0.1:8554/cam", fps=2.0)
    assert isinstance(cam.fps, float) and cam.type == "camera" and drops.type == "folder"
    assert cfg.batch == BatchConfig(max_size=8, max_wait_ms=10.0)
    assert cfg.output.dir == etc / "var/results"
    assert cfg.output.mqtt == MqttConfig(host="127.0.0.1", port=1883, topic="edge-infer/{device}/{source}/results",
                                         qos=1)
    assert cfg.metrics == MetricsConfig(host="127.0.0.1", port=9464)


def test_relative_paths_do_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    f = write(tmp_path, minimal())
    monkeypatch.chdir(tmp_path)
    cfg = load_config(Path("etc") / f.name)
    assert cfg.path == f and cfg.path.is_absolute()
    assert cfg.output.dir == tmp_path / "etc" / "results"
    assert cfg.sources[0].path == tmp_path / "etc" / "in"


def test_defaults(tmp_path):
    cfg = load_config(write(tmp_path, minimal()))
    folder, camera = cfg.sources
    assert (folder.after, folder.recursive, folder.polling, folder.poll_interval_s, folder.settle_s) == \
        ("move", True, False, 1.0, 0.5)
    assert camera.fps == 2.0
    assert cfg.model == ModelConfig(path=None, top_k=5, threads=0)
    assert cfg.batch == BatchConfig(max_size=2, max_wait_ms=10.0)
    assert cfg.pipeline == PipelineConfig(queue_size=64, workers=0, inference_threads=0, max_pixels=50_000_000,
                                          max_file_bytes=104_857_600, max_decode_mb=256,
                                          formats=("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM"))
    assert cfg.output.mqtt is None
    assert cfg.metrics == MetricsConfig(host="127.0.0.1", port=9464)
    assert cfg.shutdown == ShutdownConfig(drain_timeout_s=20.0)
    assert cfg.logging == LoggingConfig(level="info")


def test_the_decode_defaults_are_the_decoders_own(tmp_path):
    from edge_infer.decoding.decode import DEFAULT_FORMATS, DEFAULT_MAX_DECODE_MB, DEFAULT_MAX_PIXELS

    assert (PipelineConfig.formats, PipelineConfig.max_decode_mb, PipelineConfig.max_pixels) == \
        (DEFAULT_FORMATS, DEFAULT_MAX_DECODE_MB, DEFAULT_MAX_PIXELS)
    cfg = load_config(write(tmp_path, {**minimal(), "pipeline": {"formats": ["jpeg", "png", "JPEG"]}}))
    assert cfg.pipeline.formats == ("JPEG", "PNG")


def test_mqtt_defaults_need_only_a_host(tmp_path):
    cfg = load_config(write(tmp_path, edited(lambda c: c["output"].update(mqtt={"host": "broker"}))))
    assert cfg.output.mqtt == MqttConfig(host="broker", port=1883, topic="edge-infer/{device}/{source}/results", qos=1)


def test_mqtt_fleet_keys(tmp_path):
    mqtt = {"host": "broker", "port": 8883, "device": "pi-7", "client_id": "cam-box-7", "username": "pi7",
            "password_file": "secrets/mqtt", "tls": True, "ca_file": "ca.crt", "cert_file": "pi7.crt",
            "key_file": "pi7.key", "spool_dir": "spool", "spool_max_bytes": 1 << 20, "on_full": "drop_oldest"}
    cfg = load_config(write(tmp_path, edited(lambda c: c["output"].update(mqtt=mqtt))))
    etc = tmp_path / "etc"
    assert cfg.output.mqtt == MqttConfig(host="broker", port=8883, device="pi-7", client_id="cam-box-7",
                                         username="pi7", password_file=etc / "secrets/mqtt", tls=True,
                                         ca_file=etc / "ca.crt", cert_file=etc / "pi7.crt", key_file=etc / "pi7.key",
                                         spool_dir=etc / "spool", spool_max_bytes=1 << 20, on_full="drop_oldest")


def test_a_login_in_clear_is_accepted_only_when_asked_for(tmp_path):
    mqtt = {"host": "127.0.0.1", "username": "pi7", "password_file": "pw", "allow_insecure_login": True}
    cfg = load_config(write(tmp_path, edited(lambda c: c["output"].update(mqtt=mqtt))))
    assert cfg.output.mqtt.allow_insecure_login and not cfg.output.mqtt.tls
    assert cfg.output.mqtt.password_file == tmp_path / "etc" / "pw"


def test_absolute_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def change(c: dict[str, Any]) -> None:
        c["sources"][0]["path"] = "~/inbox"
        c["sources"][0]["failed_dir"] = str(tmp_path / "abs" / ".." / "failed")
        c["model"] = {"path": "models/m.onnx"}
    cfg = load_config(write(tmp_path, edited(change)))
    assert cfg.sources[0].path == tmp_path / "home" / "inbox"
    assert cfg.sources[0].failed_dir == tmp_path / "failed"
    assert cfg.model.path == tmp_path / "etc" / "models" / "m.onnx"


def test_ints_are_accepted_where_floats_are_expected(tmp_path):
    def change(c: dict[str, Any]) -> None:
        c["sources"][1]["fps"] = 5
        c["shutdown"] = {"drain_timeout_s": 3}
    cfg = load_config(write(tmp_path, edited(change)))
    assert cfg.sources[1].fps == 5.0 and isinstance(cfg.sources[1].fps, float)
    assert cfg.shutdown.drain_timeout_s == 3.0 and isinstance(cfg.shutdown.drain_timeout_s, float)


def test_after_delete_needs_no_done_dir(tmp_path):
    def change(c: dict[str, Any]) -> None:
        src = c["sources"][0]
        src["after"] = "delete"
        del src["done_dir"]
    cfg = load_config(write(tmp_path, edited(change)))
    assert cfg.sources[0].after == "delete" and cfg.sources[0].done_dir is None


def test_parse_config_takes_a_dict_and_names_its_origin(tmp_path):
    cfg = parse_config(minimal(), tmp_path)
    assert cfg.path is None and cfg.output.dir == tmp_path / "results"
    with pytest.raises(InvalidConfig) as info:
        parse_config({"sources": []}, tmp_path, where="inline")
    assert info.value.path == "inline"
    assert {p.key for p in info.value.problems} == {"sources", "output.dir"}


@pytest.mark.parametrize("change, key, message", [
    (lambda c: c.update(bogus_key=1), "bogus_key", "unknown key"),
    (lambda c: c.update(batch={"bogus": 1}), "batch.bogus", "unknown key"),
    (lambda c: c["sources"][1].update(colour="red"), "sources[1].colour", "unknown key"),
    (lambda c: c["output"].update(mqtt={"host": "h", "retain": True}), "output.mqtt.retain", "unknown key"),
    (lambda c: c["sources"][1].update(fps=-1), "sources[1].fps", "must be > 0, got -1"),
    (lambda c: c["sources"][1].update(fps=61), "sources[1].fps", "must be <= 60, got 61"),
    (lambda c: c["sources"][1].update(fps=float("nan")), "sources[1].fps", "must be a finite number, got nan"),
    (lambda c: c["sources"][0].update(after="copy"), "sources[0].after",
     "must be one of move, delete, keep, got 'copy'"),
    (lambda c: c["sources"][1].update(name="Cam 0"), "sources[1].name", "must match [a-z0-9_-]+, got 'Cam 0'"),
    (lambda c: c["sources"][1].update(name="cam0\n"), "sources[1].name", "must match [a-z0-9_-]+, got 'cam0\\n'"),
    (lambda c: c["sources"][1].update(name="drops"), "sources[1].name",
     "duplicate source name 'drops' (also sources[0])"),
    (lambda c: c["sources"][1].pop("type"), "sources[1].type", "required"),
    (lambda c: c["sources"][1].update(type="usb"), "sources[1].type", "must be one of camera, folder, got 'usb'"),
    (lambda c: c["sources"][1].pop("url"), "sources[1].url", "required"),
    (lambda c: c["sources"][1].update(url=""), "sources[1].url", "must not be empty"),
    (lambda c: c["sources"][0].pop("name"), "sources[0].name", "required"),
    (lambda c: c["sources"][0].pop("path"), "sources[0].path", "required"),
    (lambda c: c["sources"][0].pop("failed_dir"), "sources[0].failed_dir", "required"),
    (lambda c: c["sources"][0].pop("done_dir"), "sources[0].done_dir", "required"),
    (lambda c: c["output"].pop("dir"), "output.dir", "required"),
    (lambda c: c["output"].update(mqtt={"port": 1883}), "output.mqtt.host", "required"),
    (lambda c: c.update(sources=[]), "sources", "required (at least one source)"),
    (lambda c: c.update(sources={"name": "x"}), "sources", "must be a list of sources, got {'name': 'x'}"),
    (lambda c: c["sources"].append("cam1"), "sources[2]", "must be a mapping, got 'cam1'"),
    (lambda c: c.update(batch=[8]), "batch", "must be a mapping, got [8]"),
    (lambda c: c.update(batch={"max_size": True}), "batch.max_size", "must be an integer, got true"),
    (lambda c: c.update(batch={"max_size": 8.0}), "batch.max_size", "must be an integer, got 8.0"),
    (lambda c: c.update(batch={"max_size": "8"}), "batch.max_size", "must be an integer, got '8'"),
    (lambda c: c.update(batch={"max_size": None}), "batch.max_size", "must be an integer, got null"),
    (lambda c: c.update(batch={"max_size": 0}), "batch.max_size", "must be >= 1, got 0"),
    (lambda c: c.update(batch={"max_size": 257}), "batch.max_size", "must be <= 256, got 257"),
    (lambda c: c.update(batch={"max_wait_ms": True}), "batch.max_wait_ms", "must be a number, got true"),
    (lambda c: c["sources"][0].update(recursive="yes"), "sources[0].recursive", "must be true or false, got 'yes'"),
    (lambda c: c["sources"][0].update(polling=1), "sources[0].polling", "must be true or false, got 1"),
    (lambda c: c["sources"][0].update(poll_interval_s=0), "sources[0].poll_interval_s", "must be > 0, got 0"),
    (lambda c: c["sources"][0].update(settle_s=-0.5), "sources[0].settle_s", "must be >= 0, got -0.5"),
    (lambda c: c["sources"][0].update(path=42), "sources[0].path", "must be a non-empty path, got 42"),
    (lambda c: c.update(model={"top_k": 1001}), "model.top_k", "must be <= 1000, got 1001"),
    (lambda c: c.update(model={"threads": -1}), "model.threads", "must be >= 0, got -1"),
    (lambda c: c.update(pipeline={"workers": 65}), "pipeline.workers", "must be <= 64, got 65"),
    (lambda c: c.update(pipeline={"inference_threads": 17}), "pipeline.inference_threads", "must be <= 16, got 17"),
    (lambda c: c.update(pipeline={"max_file_bytes": 0}), "pipeline.max_file_bytes", "must be >= 1, got 0"),
    (lambda c: c.update(pipeline={"max_decode_mb": 0}), "pipeline.max_decode_mb", "must be >= 1, got 0"),
    (lambda c: c.update(pipeline={"formats": []}), "pipeline.formats",
     "must be a non-empty list of JPEG, PNG, WEBP, GIF, BMP, TIFF, PPM, got []"),
    (lambda c: c.update(pipeline={"formats": "JPEG"}), "pipeline.formats",
     "must be a non-empty list of JPEG, PNG, WEBP, GIF, BMP, TIFF, PPM, got 'JPEG'"),
    (lambda c: c.update(pipeline={"formats": ["jpeg", "EPS", "PDF"]}), "pipeline.formats",
     "must be some of JPEG, PNG, WEBP, GIF, BMP, TIFF, PPM, got ['EPS', 'PDF']"),
    (lambda c: c.update(metrics={"port": 70000}), "metrics.port", "must be <= 65535, got 70000"),
    (lambda c: c.update(shutdown={"drain_timeout_s": 0}), "shutdown.drain_timeout_s", "must be > 0, got 0"),
    (lambda c: c.update(logging={"level": "verbose"}), "logging.level",
     "must be one of debug, info, warning, error, got 'verbose'"),
    (lambda c: c["output"].update(mqtt={"host": "h", "qos": 3}), "output.mqtt.qos", "must be one of 0, 1, 2, got 3"),
    (lambda c: c["output"].update(mqtt={"host": "h", "qos": True}), "output.mqtt.qos",
     "must be one of 0, 1, 2, got true"),
    (lambda c: c["output"].update(mqtt={"host": "h", "port": 0}), "output.mqtt.port", "must be >= 1, got 0"),
    (lambda c: c["output"].update(mqtt={"host": "h", "topic": "x/{site}"}), "output.mqtt.topic",
     "may only use the placeholders {device} and {source}, got 'x/{site}'"),
    (lambda c: c["output"].update(mqtt={"host": "h", "topic": "x/#"}), "output.mqtt.topic",
     "must not contain the MQTT wildcards + or #, got 'x/#'"),
    (lambda c: c["output"].update(mqtt={"host": "h", "password": "s3cret"}), "output.mqtt.password",
     "not allowed in the config: put the password in a file only the service can read and name that file in "
     "password_file"),
    (lambda c: c["output"].update(mqtt={"host": "h", "password_file": "pw"}), "output.mqtt.password_file",
     "needs username"),
    (lambda c: c["output"].update(mqtt={"host": "h", "username": "u", "password_file": "pw"}),
     "output.mqtt.password_file", "would be sent in clear without tls: true (allow_insecure_login: true allows it)"),
    (lambda c: c["output"].update(mqtt={"host": "h", "ca_file": "ca.crt"}), "output.mqtt.ca_file", "needs tls: true"),
    (lambda c: c["output"].update(mqtt={"host": "h", "tls": True, "cert_file": "c.crt"}), "output.mqtt.key_file",
     "cert_file and key_file go together"),
    (lambda c: c["output"].update(mqtt={"host": "h", "device": "a/b"}), "output.mqtt.device",
     "must match [A-Za-z0-9_.-]+ (one topic level), got 'a/b'"),
    (lambda c: c["output"].update(mqtt={"host": "h", "status_topic": "x/{source}"}), "output.mqtt.status_topic",
     "may only use the placeholder {device}, got 'x/{source}'"),
    (lambda c: c["output"].update(mqtt={"host": "h", "on_full": "wait"}), "output.mqtt.on_full",
     "must be one of block, drop_oldest, got 'wait'"),
    (lambda c: c["output"].update(mqtt={"host": "h", "spool_max_bytes": 1000}), "output.mqtt.spool_max_bytes",
     "must be >= 65536, got 1000"),
    (lambda c: c["output"].update(mqtt={"host": "h", "max_inflight": 0}), "output.mqtt.max_inflight",
     "must be >= 1, got 0"),
])
def test_each_problem_names_its_key_path(tmp_path, change, key, message):
    assert problems_of(tmp_path, edited(change)) == [(key, message)]


@pytest.mark.parametrize("where, value, key, message", [
    ("done_dir", "in/done", "sources[0].done_dir", "must not be inside path"),
    ("failed_dir", "in/sub/failed", "sources[0].failed_dir", "must not be inside path"),
    ("done_dir", "in", "sources[0].done_dir", "must not be the same folder as path"),
    ("failed_dir", "./in/", "sources[0].failed_dir", "must not be the same folder as path"),
    ("failed_dir", "done", "sources[0].failed_dir", "must not be the same folder as done_dir"),
])
def test_output_folders_must_not_feed_back_into_the_input(tmp_path, where, value, key, message):
    found = problems_of(tmp_path, edited(lambda c: c["sources"][0].update({where: value})))
    assert [k for k, _ in found] == [key] and found[0][1].startswith(message)


def test_a_subfolder_is_fine_when_not_recursive(tmp_path):
    cfg = load_config(write(tmp_path, edited(lambda c: c["sources"][0].update(done_dir="in/done", recursive=False))))
    assert cfg.sources[0].done_dir == tmp_path / "etc" / "in" / "done"


def test_results_must_not_land_in_a_watched_folder(tmp_path):
    found = problems_of(tmp_path, edited(lambda c: c["output"].update(dir="in/results")))
    assert [k for k, _ in found] == ["output.dir"] and "'drops'" in found[0][1]


def test_several_problems_are_reported_at_once(tmp_path):
    def change(c: dict[str, Any]) -> None:
        c["bogus_key"] = True
        c["batch"] = {"max_size": 0, "bogus": 1}
        c["sources"][1].update(fps=0, name="drops")
        c["sources"][0].pop("failed_dir")
    found = dict(problems_of(tmp_path, edited(change)))
    assert found == {
        "bogus_key": "unknown key",
        "batch.max_size": "must be >= 1, got 0",
        "batch.bogus": "unknown key",
        "sources[1].fps": "must be > 0, got 0",
        "sources[1].name": "duplicate source name 'drops' (also sources[0])",
        "sources[0].failed_dir": "required",
    }


def test_the_exception_lists_every_problem(tmp_path):
    f = write(tmp_path, edited(lambda c: c.update(bogus_key=1, batch={"max_size": -1})))
    with pytest.raises(InvalidConfig) as info:
        load_config(f)
    assert info.value.path == str(f)
    text = str(info.value)
    assert "2 problem(s)" in text
    assert "bogus_key: unknown key" in text and "batch.max_size: must be >= 1, got -1" in text


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InvalidConfig) as info:
        load_config(missing)
    assert info.value.path == str(missing)
    assert [(p.key, p.message) for p in info.value.problems] == [("<file>", "cannot read: No such file or directory")]


def test_a_folder_is_not_a_config_file(tmp_path):
    with pytest.raises(InvalidConfig) as info:
        load_config(tmp_path)
    assert [p.key for p in info.value.problems] == ["<file>"]


def test_invalid_yaml(tmp_path):
    found = problems_of(tmp_path, "sources: [\n  - name: x\noutput: {dir: r")
    assert len(found) == 1 and found[0][0] == "<file>" and found[0][1].startswith("invalid YAML")


def test_duplicate_yaml_keys_are_an_error_not_a_silent_override(tmp_path):
    text = yaml.safe_dump(minimal(), sort_keys=False) + "output:\n  dir: elsewhere\n"
    found = problems_of(tmp_path, text)
    assert len(found) == 1 and found[0][0] == "<file>" and "duplicate key 'output'" in found[0][1]


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    text = ("sources:\n"
            "  - &base {name: a, type: folder, path: in, done_dir: done, failed_dir: failed}\n"
            "  - {<<: *base, name: b, path: in2}\n"
            "output: {dir: results}\n")
    cfg = load_config(write(tmp_path, text))
    assert [s.name for s in cfg.sources] == ["a", "b"] and cfg.sources[1].path == tmp_path / "etc" / "in2"


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "---\n"])
def test_empty_file_needs_sources(tmp_path, text):
    found = problems_of(tmp_path, text)
    assert ("sources", "required (at least one source)") in found


def test_top_level_must_be_a_mapping(tmp_path):
    assert problems_of(tmp_path, "- just\n- a list\n") == [("<root>", "must be a mapping, got ['just', 'a list']")]


def test_dataclasses_are_frozen(tmp_path):
    cfg = load_config(write(tmp_path, edited(lambda c: c["output"].update(mqtt={"host": "h"}))))
    assert isinstance(cfg, AppConfig) and isinstance(cfg.sources, tuple)
    for obj, field in [(cfg, "path"), (cfg.model, "top_k"), (cfg.sources[0], "path"), (cfg.sources[1], "fps"),
                       (cfg.batch, "max_size"), (cfg.pipeline, "workers"), (cfg.output, "dir"),
                       (cfg.output.mqtt, "qos"), (cfg.metrics, "port"), (cfg.shutdown, "drain_timeout_s"),
                       (cfg.logging, "level")]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, None)


def test_an_unused_done_dir_is_not_checked_for_overlap(tmp_path):
    cfg = load_config(write(tmp_path, edited(lambda c: c["sources"][0].update(after="keep", done_dir="in"))))
    assert cfg.sources[0].after == "keep" and cfg.sources[0].done_dir == tmp_path / "etc" / "in"




def test_thread_plan_resolves_zeros_for_the_machine(tmp_path):
    from edge_infer.pipeline.plan import ThreadPlan, plan_threads

    cfg = load_config(write(tmp_path, minimal()))
    assert cfg.pipeline.inference_threads == 0
    # Two cores: two batches at once, one onnxruntime thread each; one core: one of each.
    assert plan_threads(cfg, 2) == ThreadPlan(workers=2, inference_threads=2, intra_op=1)
    assert plan_threads(cfg, 1) == ThreadPlan(workers=1, inference_threads=1, intra_op=1)
    assert plan_threads(cfg, 4) == ThreadPlan(workers=4, inference_threads=2, intra_op=2)
    set_ = dataclasses.replace
    one = set_(cfg, pipeline=set_(cfg.pipeline, inference_threads=1, workers=3), model=set_(cfg.model, threads=0))
    assert plan_threads(one, 2) == ThreadPlan(workers=3, inference_threads=1, intra_op=2)
    explicit = set_(cfg, model=set_(cfg.model, threads=3))
    assert plan_threads(explicit, 2).intra_op == 3
