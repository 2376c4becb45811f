"""A camera's regions while the output disk is blocked: the feed dies during a full disk, and its regions
still go ``unknown`` within ``stall_after_s``, in the metrics and over MQTT. The regions are ticked by their
own stage, never behind a writer holding a folder input until the disk takes it."""
from __future__ import annotations

import shutil
import time

import pytest

from tests.support.daemon import RunningApp, wait_for, write_config
from tests.support.fs import fill
from tests.support.images import write_images
from tests.support.paths import SAMPLES

pytestmark = pytest.mark.usefixtures("pyav")
STALL_S = 2.0
STATE = "edge-infer/pi1/cam/whole/state"


def test_regions_go_unknown_when_the_feed_dies_during_a_full_output_disk(tmp_path, tmpfs, shared):
    pytest.importorskip("paho.mqtt", reason="needs paho-mqtt: pip install -e '.[mqtt,dev]'")
    from tests.support.mqtt import Broker, Subscriber
    from tests.support.mjpeg import MjpegServer

    out = tmpfs("out", "2m")
    server = MjpegServer([SAMPLES / "n01440764_tench.JPEG"], fps=10)
    server.__enter__()
    try:
        with Broker(tmp_path / "broker") as broker, Subscriber(broker.port, topics=("edge-infer/#",)) as sub:
            cam = {"name": "cam", "type": "camera", "url": server.url, "fps": 10, "stall_after_s": STALL_S,
                   "open_timeout_s": 2, "read_timeout_s": 1, "reconnect_min_s": 0.2, "reconnect_max_s": 1,
                   "regions": [{"name": "whole", "crop": [0, 0, 1, 1], "threshold": 0.1}]}
            folder = {"name": "drops", "type": "folder", "path": "inbox", "done_dir": "done", "failed_dir": "failed"}
            mqtt = {"host": "127.0.0.1", "port": broker.port, "device": "pi1", "reconnect_max_s": 1,
                    "connect_timeout_s": 5, "spool_dir": str(tmp_path / "spool")}  # not on the full disk
            cfg = write_config(tmp_path, [cam, folder], output={"dir": str(out), "mqtt": mqtt},
                               shutdown={"drain_timeout_s": 1})
            with RunningApp(cfg) as run:
                def unknown() -> float:
                    return run.sample("edge_infer_region_state", source="cam", region="whole", state="unknown")

                wait_for(lambda: unknown() == 0, 30, "the region confirmed a state")
                wait_for(lambda: sub.received(STATE) and sub.received(STATE)[-1][0] != b"unknown", 15,
                         "that state at the broker")
                fill(out)
                for p in write_images(tmp_path / "staging", 3):
                    shutil.copyfile(p, tmp_path / "inbox" / p.name)
                wait_for(lambda: run.sample("edge_infer_output_blocked", reason="enospc") == 1, 30,
                         "the writer holding a folder input")
                server.__exit__(None, None, None)  # the feed dies while the disk is full
                stopped = time.monotonic()
                # stall_after_s from the last frame, plus the regions' tick and a scrape
                wait_for(lambda: unknown() == 1, STALL_S + 3, "the region unknown within stall_after_s")
                assert time.monotonic() - stopped < STALL_S + 3
                wait_for(lambda: sub.received(STATE)[-1][0] == b"unknown", 5, "unknown at the broker")
                assert run.sample("edge_infer_output_blocked", reason="enospc") == 1  # still blocked
    finally:
        server.__exit__(None, None, None)
