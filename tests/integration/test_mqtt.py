"""The fleet sink against a real Mosquitto broker on loopback: delivery, outages, restarts, a full spool, TLS."""
from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, write_images
from tests.integration.daemon_util import RunningApp, read_result, wait_for, write_config
from tests.integration.mqtt_util import Broker, Subscriber, free_port, make_tls, mosquitto_path, openssl_or_skip

TOPIC = "edge-infer/dev1/drops/results"
STATUS = "edge-infer/dev1/status"
# "Restarted a minute later": the outage lasts OUTAGE_S, with reconnect_max_s 1, so the daemon fails to
# reconnect several times at its capped backoff, which is all a minute would add (at the default cap, 30 s, a
# minute is two attempts). Results made meanwhile must wait in the spool.
OUTAGE_S = 5.0


@pytest.fixture(autouse=True)
def _needs_broker_and_paho() -> None:
    pytest.importorskip("paho.mqtt", reason="needs paho-mqtt: pip install -e '.[mqtt,dev]'")
    mosquitto_path()


def mqtt_config(tmp_path: Path, port: int, **extra: Any) -> Path:
    mqtt = {"host": "127.0.0.1", "port": port, "device": "dev1", "reconnect_max_s": 1, "connect_timeout_s": 5,
            **extra}
    # One worker and batches of one: results are made in the order inputs arrive, so order can be checked.
    return write_config(tmp_path, output={"mqtt": mqtt}, pipeline={"workers": 1}, batch={"max_size": 1})


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def drop_in_order(tmp_path: Path, images: list[Path]) -> None:
    """Each input, once the previous one is acknowledged (in done/: its result is written and spooled)."""
    for p in images:
        shutil.copy(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: (tmp_path / "done" / p.name).exists(), 60, f"{p.name} done")


def test_a_burst_arrives_with_retained_status_and_metrics(tmp_path):
    imgs = write_images(tmp_path / "staging", 12)
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port) as sub:
        with RunningApp(mqtt_config(tmp_path, broker.port)) as run:
            wait_for(lambda: sub.last(STATUS) == b"online", 30, "online status")
            for p in imgs:
                shutil.copy(p, tmp_path / "inbox" / p.name)
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 12, 60, "12 results over MQTT")
            wait_for(lambda: run.sample("edge_infer_mqtt_acked_total") == 12, 10, "12 acknowledged")
            assert run.sample("edge_infer_mqtt_spooled_total") == 12
            assert run.sample("edge_infer_mqtt_published_total") == 12
            assert run.sample("edge_infer_mqtt_connected") == 1
            assert run.sample("edge_infer_mqtt_dropped_total") == 0
            assert run.app.spool.pending == 0
        assert sub.last(STATUS) == b"offline"  # said on a clean stop (the last will covers an unclean one)
        by_sha = {r["input_sha256"]: r for r in sub.results(TOPIC)}
        for p in imgs:  # the very object of the result file
            assert by_sha[sha(p)] == read_result(tmp_path, p.name)


def test_broker_down_mid_burst_then_back_loses_nothing_and_keeps_order(tmp_path):
    imgs = write_images(tmp_path / "staging", 24)
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port) as sub:
        with RunningApp(mqtt_config(tmp_path, broker.port)) as run:
            drop_in_order(tmp_path, imgs[:8])
            broker.stop()  # mid-burst: the last results may be in flight, unacknowledged
            wait_for(lambda: run.sample("edge_infer_mqtt_connected") == 0, 30, "the loss noticed")
            drop_in_order(tmp_path, imgs[8:16])  # made while the broker is away: spooled
            assert run.app.spool.pending >= 8
            time.sleep(OUTAGE_S)  # the outage itself (not a synchronisation): reconnects keep failing
            assert run.sample("edge_infer_mqtt_connected") == 0 and run.app.spool.pending >= 8
            broker.start()
            drop_in_order(tmp_path, imgs[16:])
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 24, 60, "all 24 results")
            wait_for(lambda: run.app.spool.pending == 0, 30, "the spool drained")
    assert sub.first_arrivals(TOPIC) == [sha(p) for p in imgs]  # none lost, in order; repeats allowed
    assert run.sample("edge_infer_mqtt_acked_total") >= 24


def test_results_a_broker_took_but_never_acknowledged_are_sent_again(tmp_path):
    imgs = write_images(tmp_path / "staging", 6)
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port) as sub:
        wait_for(lambda: (broker.folder / "mosquitto.db").exists(), 20, "the collector's session saved")
        with RunningApp(mqtt_config(tmp_path, broker.port)) as run:
            drop_in_order(tmp_path, imgs[:2])
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 2, 30, "the first two")
            broker.hang()
            drop_in_order(tmp_path, imgs[2:5])
            wait_for(lambda: run.sample("edge_infer_mqtt_published_total") >= 5, 30, "three sent, unacknowledged")
            assert run.sample("edge_infer_mqtt_acked_total") == 2 and run.app.spool.pending == 3
            broker.kill()  # it never read them: only the daemon still has them
            broker.start()
            drop_in_order(tmp_path, imgs[5:])
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 6, 60, "all 6 results")
    assert sub.first_arrivals(TOPIC) == [sha(p) for p in imgs]


def daemon(cfg: Path, port: int) -> subprocess.Popen[str]:
    """``edge-infer run`` as a real process, once it answers /readyz."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_infer", "run", "-c", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ready() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    wait_for(ready, 60, "the daemon ready")
    return proc


def test_results_spooled_offline_survive_a_kill_9_and_a_restart(tmp_path):
    imgs = write_images(tmp_path / "staging", 15)
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port) as sub:
        broker.stop()  # the device is offline from the start
        port = free_port()
        cfg = mqtt_config(tmp_path, broker.port)
        cfg.write_text(cfg.read_text().replace("port: 0", f"port: {port}"))
        first = daemon(cfg, port)
        try:
            drop_in_order(tmp_path, imgs[:10])
        finally:
            first.send_signal(signal.SIGKILL)  # no drain, no goodbye: what a power cut does to the process
            first.communicate(timeout=30)
        second = daemon(cfg, port)
        try:
            drop_in_order(tmp_path, imgs[10:])  # still offline: spooled behind the first ten
            broker.start()
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 15, 60, "all 15 results")
            wait_for(lambda: sub.last(STATUS) == b"online", 10, "online status")
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=40)
            assert second.returncode == 0, err
        finally:
            if second.poll() is None:
                second.kill()
                second.communicate()
        wait_for(lambda: sub.last(STATUS) == b"offline", 10, "offline status")
    assert sub.first_arrivals(TOPIC) == [sha(p) for p in imgs]
    assert not list((tmp_path / "results" / ".mqtt-spool").glob("seg-*.log"))  # all delivered, all removed


def test_a_full_spool_holds_inputs_back_until_the_broker_returns(tmp_path):
    # top_k 200 makes each result ~10 KB: 64 KiB of spool holds a handful.
    imgs = write_images(tmp_path / "staging", 14)
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port) as sub:
        broker.stop()
        cfg = mqtt_config(tmp_path, broker.port, spool_max_bytes=65536, on_full="block")
        cfg.write_text(cfg.read_text().replace("sources:", "model:\n  top_k: 200\nsources:", 1))
        with RunningApp(cfg) as run:
            for p in imgs:
                shutil.copy(p, tmp_path / "inbox" / p.name)
            wait_for(lambda: run.sample("edge_infer_mqtt_spool_full") == 1, 60, "the spool full")
            held = wait_for(lambda: sorted(p.name for p in (tmp_path / "inbox").iterdir()), 10, "inputs held")
            assert held and run.app.writer.blocked_reason.startswith("output blocked (spool_full): MQTT spool full")
            assert run.sample("edge_infer_output_blocked", reason="spool_full") == 1
            assert run.sample("edge_infer_mqtt_spool_bytes") <= 65536
            assert run.sample("edge_infer_mqtt_dropped_total") == 0
            broker.start()
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 14, 90, "all 14 results")
            wait_for(lambda: not list((tmp_path / "inbox").iterdir()), 30, "the inbox empty")
            assert run.sample("edge_infer_mqtt_spool_full") == 0
            assert run.sample("edge_infer_output_blocked", reason="spool_full") == 0
    assert set(sub.first_arrivals(TOPIC)) == {sha(p) for p in imgs}


def test_drop_oldest_keeps_intake_going_and_counts_what_it_drops(tmp_path):
    imgs = write_images(tmp_path / "staging", 14)
    with Broker(tmp_path / "broker") as broker, Subscriber(broker.port) as sub:
        broker.stop()
        cfg = mqtt_config(tmp_path, broker.port, spool_max_bytes=65536, on_full="drop_oldest")
        cfg.write_text(cfg.read_text().replace("sources:", "model:\n  top_k: 200\nsources:", 1))
        with RunningApp(cfg) as run:
            drop_in_order(tmp_path, imgs)  # never held back
            dropped = run.sample("edge_infer_mqtt_dropped_total")
            assert dropped > 0 and run.sample("edge_infer_mqtt_spool_bytes") <= 65536
            broker.start()
            wait_for(lambda: run.app.spool.pending == 0, 60, "the spool drained")
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 14 - dropped, 30, "what was kept")
    # The newest survive, in order.
    assert sub.first_arrivals(TOPIC) == [sha(p) for p in imgs[int(dropped):]]


def test_tls_with_a_client_certificate_from_a_test_ca(tmp_path):
    openssl_or_skip()
    tls = make_tls(tmp_path / "pki")
    imgs = write_images(tmp_path / "staging", 3)
    with Broker(tmp_path / "broker", tls=tls) as broker, Subscriber(broker.port, tls=tls) as sub:
        cfg = mqtt_config(tmp_path, broker.port, tls=True, ca_file=str(tls["ca"]),
                          cert_file=str(tls["client_cert"]), key_file=str(tls["client_key"]))
        with RunningApp(cfg) as run:
            for p in imgs:
                shutil.copy(p, tmp_path / "inbox" / p.name)
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 3, 60, "3 results over TLS")
            assert run.sample("edge_infer_mqtt_connected") == 1
    assert set(sub.first_arrivals(TOPIC)) == {sha(p) for p in imgs}


def test_tls_refuses_a_broker_its_ca_did_not_sign(tmp_path):
    openssl_or_skip()
    tls, other = make_tls(tmp_path / "pki"), make_tls(tmp_path / "other")
    with Broker(tmp_path / "broker", tls=tls) as broker:
        cfg = mqtt_config(tmp_path, broker.port, tls=True, ca_file=str(other["ca"]),
                          cert_file=str(other["client_cert"]), key_file=str(other["client_key"]))
        with RunningApp(cfg) as run:
            shutil.copy(write_images(tmp_path / "staging", 1)[0], tmp_path / "inbox" / "a.jpg")
            wait_for(lambda: (tmp_path / "done" / "a.jpg").exists(), 60, "the input done")
            time.sleep(2)  # a few connection attempts, each refused at the TLS handshake
            assert run.sample("edge_infer_mqtt_connected") == 0 and run.app.spool.pending == 1


def test_a_login_with_the_password_from_a_file(tmp_path):
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    imgs = write_images(tmp_path / "staging", 2)
    with Broker(tmp_path / "broker", logins={"dev1": "s3cret", "collector": "c0llect"}) as broker, \
            Subscriber(broker.port, login=("collector", "c0llect")) as sub:
        cfg = mqtt_config(tmp_path, broker.port, username="dev1", password_file="mqtt-password")
        with RunningApp(cfg) as run:
            for p in imgs:
                shutil.copy(p, tmp_path / "inbox" / p.name)
            wait_for(lambda: len(sub.first_arrivals(TOPIC)) == 2, 60, "2 results")
            assert run.sample("edge_infer_mqtt_connected") == 1


def test_a_wrong_password_is_refused_by_the_broker_and_results_wait(tmp_path):
    (tmp_path / "mqtt-password").write_text("wrong\n")
    with Broker(tmp_path / "broker", logins={"dev1": "s3cret"}) as broker:
        cfg = mqtt_config(tmp_path, broker.port, username="dev1", password_file="mqtt-password")
        with RunningApp(cfg) as run:
            shutil.copy(write_images(tmp_path / "staging", 1)[0], tmp_path / "inbox" / "a.jpg")
            wait_for(lambda: (tmp_path / "done" / "a.jpg").exists(), 60, "the input done")
            assert run.sample("edge_infer_mqtt_connected") == 0 and run.app.spool.pending == 1


def test_check_config_and_run_name_an_unreadable_password_file_or_a_password_in_the_config(tmp_path):
    from tests.integration.test_daemon_process import run_cli

    cfg = mqtt_config(tmp_path, 1883, username="dev1", password_file="missing")
    for command in ("check-config", "run"):
        r = run_cli(command, "-c", str(cfg))
        assert r.returncode == 78 and "output.mqtt.password_file: cannot read" in r.stderr, r.stderr
    cfg.write_text(cfg.read_text().replace("password_file: missing", "password: s3cret"))
    r = run_cli("check-config", "-c", str(cfg))
    assert r.returncode == 78 and "output.mqtt.password: not allowed in the config" in r.stderr, r.stderr
