"""MQTT pieces that need no broker: the spool record encoder, the payload, the default client id."""
from __future__ import annotations

import json
import os
import re

from prometheus_client import CollectorRegistry

from edge_infer.config import MqttConfig
from edge_infer.ops.metrics import Metrics
from edge_infer.sinks.durable import encode_json
from edge_infer.sinks.mqtt_client_id import default_client_id
from edge_infer.sinks.mqtt_records import MqttSink, decode, encode, encode_raw
from edge_infer.sinks.spool import Spool

CFG = MqttConfig(host="127.0.0.1")


def test_a_name_that_is_not_utf8_is_encoded_as_in_its_result_file():
    name = os.fsdecode(b"caf\xe9-\xff.jpg")  # lone surrogates, as Python holds a name that is not UTF-8
    obj = {"source": "drops", "input": name, "status": "ok"}
    topic, payload, retain = decode(encode("edge-infer/d/drops/results", obj))
    assert topic == "edge-infer/d/drops/results" and not retain
    assert payload + b"\n" == encode_json(obj)  # one encoder for the files and MQTT
    assert os.fsencode(json.loads(payload)["input"]) == b"caf\xe9-\xff.jpg"
    plain = {"source": "drops", "input": "café.jpg"}  # UTF-8 names stay as they are, not escaped
    assert decode(encode("t", plain))[1] == "{\"source\": \"drops\", \"input\": \"café.jpg\"}".encode()


def test_a_record_keeps_its_retain_flag_and_one_written_before_the_flag_reads_as_not_retained():
    topic, payload, retain = decode(encode_raw("edge-infer/d/cam/door/state", b"open", retain=True))
    assert (topic, payload, retain) == ("edge-infer/d/cam/door/state", b"open", True)
    old = len(b"t").to_bytes(2, "little") + b"t" + b"{}"  # the layout before the flag existed
    assert decode(old) == ("t", b"{}", False)


def test_region_states_are_retained_and_events_are_not(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    sink = MqttSink(cfg=CFG, device="d1", spool=spool, metrics=Metrics(CollectorRegistry()))
    sink.add_state("cam0", "door", "open")
    sink.add_event({"source": "cam0", "region": "door", "state": "open", "previous": "unknown"})
    (_, state), (_, event) = spool.read(0, 10)
    assert decode(state) == ("edge-infer/d1/cam0/door/state", b"open", True)
    topic, payload, retain = decode(event)
    assert topic == "edge-infer/d1/cam0/door/events" and not retain
    assert json.loads(payload) == {"source": "cam0", "region": "door", "state": "open", "previous": "unknown",
                                   "device": "d1"}


def test_each_payload_names_its_device(tmp_path):
    spool = Spool(tmp_path, 1 << 20)
    sink = MqttSink(cfg=CFG, device="shop-door-3", spool=spool, metrics=Metrics(CollectorRegistry()))
    sink.add({"source": "drops", "input": "a.jpg", "status": "ok"})
    sink.add_frame({"source": "cam0", "frame": {"seq": 1}, "status": "ok"})
    got = [decode(r) for _, r in spool.read(0, 10)]
    assert [t for t, _, _ in got] == ["edge-infer/shop-door-3/drops/results", "edge-infer/shop-door-3/cam0/results"]
    assert [json.loads(p)["device"] for _, p, _ in got] == ["shop-door-3", "shop-door-3"]
    spool.close()


def test_corrupt_spool_records_found_at_start_are_counted(tmp_path):
    s = Spool(tmp_path, 1 << 20)
    for i in range(5):
        s.append(f"{i:06d}".encode().ljust(100, b"."))
    s.close()
    (seg,) = tmp_path.glob("seg-*")
    with open(seg, "r+b") as f:
        f.seek(seg.stat().st_size // 5 * 2 + 40)
        f.write(b"\xaa")
    registry = CollectorRegistry()
    spool = Spool(tmp_path, 1 << 20)
    MqttSink(cfg=CFG, device="d", spool=spool, metrics=Metrics(registry))
    assert registry.get_sample_value("edge_infer_mqtt_spool_corrupt_records_total") == 1
    spool.close()


def ids_file(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_client_id_is_the_device_plus_a_digest_of_its_machine_id(tmp_path):
    a = ids_file(tmp_path, "a", "0123456789abcdef0123456789abcdef\n")
    b = ids_file(tmp_path, "b", "fedcba9876543210fedcba9876543210\n")
    first = default_client_id("raspberrypi", tmp_path / "spool", (a,))
    assert re.fullmatch(r"edge-infer-raspberrypi-[0-9a-f]{8}", first)
    assert default_client_id("raspberrypi", tmp_path / "spool", (a,)) == first  # stable across restarts
    assert default_client_id("raspberrypi", tmp_path / "spool", (b,)) != first  # another machine, another id
    assert "01234567" not in first  # the machine id itself is not given away


def test_the_client_id_falls_back_to_the_next_machine_id_file_then_to_one_kept_in_the_spool(tmp_path):
    dbus = ids_file(tmp_path, "dbus", "0123456789abcdef0123456789abcdef\n")
    missing, empty = tmp_path / "missing", ids_file(tmp_path, "empty", "")
    unset = ids_file(tmp_path, "unset", "uninitialized\n")  # systemd's placeholder before the first boot ends
    assert default_client_id("pi", tmp_path / "spool", (missing, empty, unset, dbus)) == \
        default_client_id("pi", tmp_path / "spool", (dbus,))
    kept = default_client_id("pi", tmp_path / "spool", (missing, empty))
    assert re.fullmatch(r"edge-infer-pi-[0-9a-f]{8}", kept)
    assert default_client_id("pi", tmp_path / "spool", (missing,)) == kept  # the same after a restart
    assert default_client_id("pi", tmp_path / "other-spool", (missing,)) != kept


def test_a_configured_client_id_wins(tmp_path):
    from edge_infer.sinks.mqtt_publisher import MqttPublisher

    cfg = MqttConfig(host="127.0.0.1", client_id="cam-box-7")
    spool = Spool(tmp_path, 1 << 20)
    publisher = MqttPublisher(cfg=cfg, device="pi", spool=spool, metrics=Metrics(CollectorRegistry()))
    assert publisher.client_id == "cam-box-7"
    spool.close()
