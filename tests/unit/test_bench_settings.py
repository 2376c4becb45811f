"""The bench's daemon settings: what ``--daemon`` accepts, including another checkout to run from."""
from __future__ import annotations

from pathlib import Path

import pytest

from edge_infer.tools.bench_daemon import DaemonSettings

ROOT = Path(__file__).resolve().parents[2]


def test_settings_parse_and_a_checkout_to_run_the_daemon_from():
    s = DaemonSettings.parse(f"batch=8,wait=10,decoders=thread,code={ROOT}")
    assert (s.batch, s.wait_ms, s.decoders, s.code) == (8, 10.0, "thread", str(ROOT))
    assert f"code={ROOT.name}" in s.label
    assert DaemonSettings.parse("").code == "" and "code=" not in DaemonSettings.parse("").label


def test_a_code_path_that_is_not_a_checkout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a checkout"):
        DaemonSettings.parse(f"code={tmp_path}")
    with pytest.raises(ValueError):
        DaemonSettings.parse("colour=blue")
