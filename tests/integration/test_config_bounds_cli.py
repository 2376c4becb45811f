"""Configs that would cost the device, through the real command line: every one ends in exit 78 (the
status the shipped unit does not restart on) with a short message naming the key or the file.

Each command runs as a subprocess under an address-space cap and a timeout, so that a regression
fails the test with a MemoryError or a timeout instead of taking the machine down.
"""
from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from tests.support.daemon import write_config
from tests.support.paths import ROOT

# `run` imports onnxruntime before it reads the config: ~400 MB of address space.
MEMORY_CAP = 512 * 1024 * 1024
MAX_STDERR = 4096  # a few lines; before the bounds, 10 MB of unknown keys printed 17 MB


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def run_capped(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edge_infer", *args], env=env, capture_output=True,
                          text=True, timeout=60, preexec_fn=_capped)


def _with(tmp_path, lines: str, top: str = "") -> str:
    """The tests' usual config with ``lines`` (YAML) appended and ``top`` (anchors) put first."""
    cfg = write_config(tmp_path)
    cfg.write_text(top + cfg.read_text() + lines)
    return str(cfg)


def _bomb() -> str:
    """Billion laughs: nine levels of nine aliases, 9**9 strings once expanded, in 700 bytes."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def _assert_refused(r: subprocess.CompletedProcess, *named: str) -> None:
    assert r.returncode == 78, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr) <= MAX_STDERR, f"{len(r.stderr)} characters: {r.stderr[:1000]}"
    for text in named:
        assert text in r.stderr, r.stderr


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_an_alias_bomb_in_an_echoed_key_exits_78_within_the_memory_cap(tmp_path, command):
    # The bomb is what `model.top_k: must be an integer, got ...` would echo (2.2 GB in 20 s).
    cfg = _with(tmp_path, "model:\n  top_k: *i\n", top=_bomb())
    r = run_capped(command, "-c", cfg)
    _assert_refused(r, "aliases", "  e: ")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_ten_megabytes_of_unknown_keys_are_refused_unread(tmp_path, command):
    keys = "".join(f"  key_{i:08d}: value\n" for i in range(480_000))  # ~10 MB
    cfg = _with(tmp_path, "logging:\n  level: info\n" + keys)
    r = run_capped(command, "-c", cfg)
    _assert_refused(r, "<file>", "at most 131072 bytes")


def test_many_unknown_keys_within_the_size_limit_list_a_bounded_number(tmp_path):
    keys = "".join(f"  key_{i:05d}: 1\n" for i in range(5000))
    r = run_capped("check-config", "-c", _with(tmp_path, "logging:\n  level: info\n" + keys))
    _assert_refused(r, "logging.key_00000: unknown key", "5000 problem(s)", "4980 more not listed")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_deep_nesting_exits_78_naming_the_key(tmp_path, command):
    cfg = _with(tmp_path, "extra: " + "[" * 5000 + "]" * 5000 + "\n")
    _assert_refused(run_capped(command, "-c", cfg), "extra[0][0]", "deeper than 32")


@pytest.mark.parametrize("command", ["check-config", "run"])
def test_a_5000_digit_integer_exits_78_naming_the_key(tmp_path, command):
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("port: 0", "port: " + "9" * 5000))
    _assert_refused(run_capped(command, "-c", str(cfg)), "metrics.port:", "5000 characters")


def test_a_long_value_is_cut_and_the_message_says_so(tmp_path):
    cfg = _with(tmp_path, "model:\n  top_k: " + "x" * 100_000 + "\n")
    r = run_capped("check-config", "-c", cfg)
    _assert_refused(r, "model.top_k: must be an integer", "(cut: ")
