"""Decoder processes under real signals: a decoder killed mid-burst costs no input, one that keeps dying or
hangs on an input fails that input alone (``crashed``, ``timeout``), and the pool is whole again after."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np

from tests.support.daemon import RunningApp, read_result, wait_for, write_config
from tests.support.images import write_images
from tests.support.ticker import Ticker


def decoder_pids(run: RunningApp) -> list[int]:
    return [w._decoder.pid for w in run.app.stages.workers if w._decoder.pid is not None]


def error_record(root: Path, rel: str) -> dict:
    return json.loads((root / "failed" / f"{rel}.error.json").read_text())


class Signaller(Ticker):
    """Sends ``signum`` to every decoder process of ``run`` once it is ready (the replacements too)."""

    interval = 0.005

    def __init__(self, run: RunningApp, signum: int) -> None:
        super().__init__()
        self._run, self._signum = run, signum
        self.hit: set[int] = set()

    def tick(self) -> None:
        for pid in decoder_pids(self._run):
            if pid not in self.hit:
                self.hit.add(pid)
                try:
                    os.kill(pid, self._signum)
                except ProcessLookupError:
                    pass


def test_a_decoder_killed_mid_burst_costs_no_input_and_is_replaced(tmp_path):
    cfg = write_config(tmp_path, pipeline={"workers": 2})
    photos = write_images(tmp_path / "staging", 150, size=(2000, 1500))
    with RunningApp(cfg) as run:
        before = decoder_pids(run)
        assert len(before) == 2 and len(set(before)) == 2
        for pid in before:  # decoders load the decoding code only: no onnxruntime mapped
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert "onnxruntime" not in maps and ("libjpeg" in maps or "_imaging" in maps)
        for p in photos:
            os.rename(p, tmp_path / "inbox" / p.name)
        wait_for(lambda: run.sample("edge_infer_images_total", source="drops", outcome="ok") >= 5, 60, "a few done")
        os.kill(before[0], signal.SIGKILL)
        wait_for(lambda: run.sample("edge_infer_images_total", source="drops", outcome="ok") == 150, 120, "all 150")
        assert run.sample("edge_infer_images_total", source="drops", outcome="failed") == 0
        assert run.sample("edge_infer_decoder_restarts_total", reason="crashed") == 1
        after = decoder_pids(run)
        assert len(after) == 2 and before[0] not in after and all(Path(f"/proc/{p}").exists() for p in after)
    assert all(read_result(tmp_path, p.name)["status"] == "ok" for p in photos)


def slow_png(path: Path) -> Path:
    """A PNG that takes a decoder a good part of a second (noise does not compress), so that a signal sent
    as the decoder gets ready lands while it decodes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (3000, 4000, 3), dtype=np.uint8), "RGB").save(path, compress_level=1)
    return path


def test_an_input_that_keeps_killing_its_decoder_fails_as_crashed_alone(tmp_path):
    cfg = write_config(tmp_path, pipeline={"workers": 1})
    bad = slow_png(tmp_path / "bad.png")
    good = write_images(tmp_path / "staging", 1)[0]
    with RunningApp(cfg) as run:
        with Signaller(run, signal.SIGSEGV):  # every decoder dies on it, as on a decoder exploit
            os.rename(bad, tmp_path / "inbox" / "bad.png")
            wait_for(lambda: (tmp_path / "failed" / "bad.png.error.json").exists(), 60, "bad's record")
        err = error_record(tmp_path, "bad.png")["error"]
        assert err["kind"] == "crashed" and "SIGSEGV" in err["message"] and "twice" in err["message"]
        assert run.sample("edge_infer_decoder_restarts_total", reason="crashed") == 2
        os.rename(good, tmp_path / "inbox" / "good.jpg")  # the pool is whole again
        wait_for(lambda: (tmp_path / "results" / "drops" / "good.jpg.json").exists(), 60, "good's result")
        assert read_result(tmp_path, "good.jpg")["status"] == "ok"
        assert run.sample("edge_infer_errors_total", source="drops", kind="crashed") == 1


def test_a_stopped_decoder_fails_its_input_as_timeout_and_is_replaced(tmp_path):
    cfg = write_config(tmp_path, pipeline={"workers": 1, "decode_timeout_s": 1.0})
    hung = slow_png(tmp_path / "hung.png")
    good = write_images(tmp_path / "staging", 1)[0]
    with RunningApp(cfg) as run:
        with Signaller(run, signal.SIGSTOP) as stopper:  # a decode that never ends, in each fresh decoder
            t0 = time.monotonic()
            os.rename(hung, tmp_path / "inbox" / "hung.png")
            wait_for(lambda: (tmp_path / "failed" / "hung.png.error.json").exists(), 30, "hung's record")
            waited = time.monotonic() - t0
        err = error_record(tmp_path, "hung.png")["error"]
        assert err["kind"] == "timeout" and "1s" in err["message"], err
        assert waited >= 2.0  # two attempts, each given its full second
        assert run.sample("edge_infer_decoder_restarts_total", reason="timeout") == 2
        assert not any(Path(f"/proc/{p}").exists() and _state(p) == "T" for p in stopper.hit)  # killed, reaped
        os.rename(good, tmp_path / "inbox" / "good.jpg")
        wait_for(lambda: (tmp_path / "results" / "drops" / "good.jpg.json").exists(), 60, "good's result")


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"
