"""The daemon cut on cutfs, again and again (tests/power/run.py): nothing lost, torn or acknowledged unsafely,
with and without the MQTT spool; and the same runner catching a write order that is deliberately wrong."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.images import write_images
from tests.support.paths import SAMPLES

RUN = Path(__file__).with_name("run.py")
VERDICT = re.compile(r"^cuts (\d+) inputs (\d+) lost (\d+) torn (\d+) unsafe_acks (\d+) duplicates (\d+)$")
SEED = 17  # fixed in CI; run.py takes any other


def photos(tmp_path: Path) -> Path:
    """The shared photos where they are; else generated ones (the write order does not care what they show)."""
    if SAMPLES.is_dir():
        return SAMPLES
    return write_images(tmp_path / "photos", 24, size=(640, 480))[0].parent


def run(tmp_path: Path, *args: str, timeout: float = 900) -> tuple[int, dict[str, int], str]:
    proc = subprocess.run([sys.executable, str(RUN), "--workdir", str(tmp_path / "work"), *args],
                          check=False, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    print(out)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    m = VERDICT.match(last)
    assert m, f"the last line is not the verdict: {last!r}\n{out[-3000:]}"
    keys = ("cuts", "inputs", "lost", "torn", "unsafe_acks", "duplicates")
    return proc.returncode, dict(zip(keys, map(int, m.groups()))), out


@pytest.mark.slow
def test_thirty_power_cuts_lose_nothing(tmp_path, fuse_ok):
    rc, v, out = run(tmp_path, "--photos", str(photos(tmp_path)), "--cuts", "30", "--seed", str(SEED))
    assert (v["lost"], v["torn"], v["unsafe_acks"]) == (0, 0, 0), out[-3000:]
    assert rc == 0 and v["cuts"] == 30
    assert v["inputs"] >= 60  # bursts arrived and were cut: not a vacuous pass


@pytest.mark.slow
def test_thirty_power_cuts_with_the_mqtt_spool_deliver_every_result(tmp_path, fuse_ok):
    from tests.support.mqtt import mosquitto_path

    mosquitto_path()
    rc, v, out = run(tmp_path, "--photos", str(photos(tmp_path)), "--cuts", "30", "--seed", str(SEED), "--mqtt")
    assert (v["lost"], v["torn"], v["unsafe_acks"]) == (0, 0, 0), out[-3000:]
    assert rc == 0 and re.search(r"^mqtt: \d+ inputs delivered, \d+ repeats, 0 missing$", out, re.MULTILINE)


@pytest.mark.slow
@pytest.mark.parametrize("broken, finds", [("unsynced-folder", ("unsafe_acks", "lost")), ("unsynced-data", ("torn",))])
def test_a_wrong_write_order_is_caught(tmp_path, fuse_ok, broken, finds):
    rc, v, out = run(tmp_path, "--photos", str(photos(tmp_path)), "--cuts", "6", "--seed", str(SEED),
                     "--broken", broken)
    assert rc == 1
    assert any(v[k] > 0 for k in finds), out[-3000:]
