"""The status view, rendered from the metric text of a real ``Metrics`` (no daemon needed)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from edge_infer.ops.metrics import Metrics
from edge_infer.ops.status import Scrape, parse_metrics, render, url_for

SHA = "6ee1a1b63be0" + "0" * 52


def _scrape(metrics: Metrics, at: float, healthz: int = 200, readyz: int = 200) -> Scrape:
    return Scrape(healthz, readyz, parse_metrics(generate_latest(metrics.registry).decode()), at)


def _daemon() -> Metrics:
    m = Metrics(CollectorRegistry())
    m.set_model("mobilenet_v2", SHA, "int8")
    m.set_ready(True)
    m.init_source("drops", "folder")
    m.init_source("door", "camera")
    m.set_memory_limit(1_000_000_000)
    return m


def test_counts_rates_queue_cameras_and_the_last_error():
    m = _daemon()
    before = _scrape(m, at=100.0)
    for _ in range(10):
        m.count("drops", "ok")
    m.count("drops", "failed", kind="too_large")
    m.count("door", "ok")
    m.set_camera_up("door", True)
    m.camera_reconnected("door")
    m.frame_dropped("door", "superseded")
    m.frame_dropped("door", "superseded")
    m.set_queue_depth(3)
    m.set_inputs_in_flight(4)
    now = _scrape(m, at=102.0)
    stamp = now.value("edge_infer_last_error_timestamp_seconds", source="drops", kind="too_large")
    now.samples["process_start_time_seconds"] = {(): stamp - 3600}  # a daemon up for an hour
    text = render(now, before, "http://127.0.0.1:9464", wall_time=stamp + 125)
    lines = text.splitlines()
    assert lines[:5] == ["edge-infer at http://127.0.0.1:9464", "  health      alive, ready",
                         lines[2], f"  model       mobilenet_v2 int8 sha256 {SHA[:12]}",
                         "  queue       3 waiting, 4 in flight"]
    assert lines[2].startswith("  uptime      1h 02m 05s (since 20")
    assert " of 1.0 GB (" in lines[5] and "% of a core" in lines[5]
    assert lines[6].startswith("  last error  drops: too_large, 2m 05s ago (details: ")
    table = lines[lines.index("  source  ok  failed  duplicate  rate/s  last ok"):]
    assert table[1].startswith("  door     1       0          0    0.50  2m 0")
    assert table[2].startswith("  drops   10       1          0    5.50  2m 0")  # 11 finished in 2 s
    assert table[4:] == ["  camera  state  reconnects  stalls  dropped",
                         "  door    up              1       0  superseded 2"]


def test_ages_are_measured_against_the_wall_clock():
    m = _daemon()
    m.count("drops", "failed", kind="decode")
    now = _scrape(m, at=1.0)
    stamp = now.value("edge_infer_last_error_timestamp_seconds", source="drops", kind="decode")
    text = render(now, None, "u", wall_time=stamp + 312)
    assert "\n  last error  drops: decode, 5m 12s ago (details: " in text
    assert "\n  drops    0       1          0       -  never\n" in text  # one scrape: no rate


def test_a_daemon_in_trouble_reads_as_such():
    m = _daemon()
    m.set_camera_up("door", False)
    m.camera_frozen.labels("door").set(1)
    text = render(_scrape(m, at=1.0, healthz=503, readyz=0), None, "u")
    assert "\n  health      UNHEALTHY: HTTP 503, NOT READY (starting or draining): no answer\n" in text
    assert "\n  last error  none since start\n" in text
    assert "\n  door    DOWN, FROZEN           0       0  0\n" in text


def test_a_restart_between_the_scrapes_gives_no_rate():
    m = _daemon()
    for _ in range(5):
        m.count("drops", "ok")
    before = _scrape(m, at=1.0)
    text = render(_scrape(_daemon(), at=2.0), before, "u")  # counters back at 0
    assert "\n  drops    0       0          0       -  never\n" in text


def test_wildcard_listen_addresses_are_reached_on_loopback():
    assert url_for("0.0.0.0", 9464) == "http://127.0.0.1:9464"
    assert url_for("::", 9464) == "http://[::1]:9464"
    assert url_for("192.0.2.7", 80) == "http://192.0.2.7:80"


def test_parked_inputs_are_shown_only_when_there_are_some():
    m = _daemon()
    assert "parked" not in render(_scrape(m, at=1.0), None, "http://x")
    m.set_parked("drops", 2)
    line = next(x for x in render(_scrape(m, at=1.0), None, "http://x").splitlines() if "parked" in x)
    assert line.startswith("  parked      drops: 2 (recorded, cannot be moved out of the inbox; why: ")


def test_a_folder_source_not_seeing_all_of_its_folder_says_so_and_a_healthy_one_says_nothing():
    m = _daemon()
    assert "watching" not in render(_scrape(m, at=1.0), None, "http://x")
    f = m.folders
    f.folder_missing.labels("drops").set(1)
    f.polling_fallback.labels("drops").set(1)
    f.unlistable.labels("drops").set(2)
    f.missed_total.labels("drops").inc(3)
    text = render(_scrape(m, at=1.0), None, "http://x")
    assert ("  watching    drops: FOLDER MISSING (waiting for it to come back), polling (inotify "
            "ran out of watches: raise fs.inotify.max_user_watches, see README), 2 folder(s) it "
            "cannot list (named in the log), 3 file(s) found by rescans that no event "
            "reported\n") in text, text


def test_the_model_line_names_the_store_version_that_serves():
    m = _daemon()
    m.set_model("three_things", SHA, "int8", "v2")
    lines = render(_scrape(m, at=1.0), None, "http://x").splitlines()
    assert f"  model       three_things int8 sha256 {SHA[:12]} version v2" in lines
