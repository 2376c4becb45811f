"""The YAML loader's bounds: size, alias expansion, depth, long numbers, what YAML's constructors
choke on; and messages that never echo an unbounded value nor list unboundedly many problems."""
from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import yaml

from edge_infer.config import load_config
from edge_infer.config_reader import load_yaml
from edge_infer.errors import ConfigError, InvalidConfig

GOOD = {"sources": [{"name": "drops", "type": "folder", "path": "inbox", "done_dir": "done",
                     "failed_dir": "failed"}],
        "output": {"dir": "results"}}


@pytest.fixture(autouse=True)
def _memory_capped():
    """A regression fails with MemoryError instead of taking the machine (before the bounds,
    /dev/zero as a config grew until the OOM killer came)."""
    status = Path("/proc/self/status").read_text().splitlines()
    size_kb = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (size_kb * 1024 + 1024**3, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "config.yaml"
    f.write_text(text)
    return f


def _refused(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(InvalidConfig) as info:
        load_config(_write(tmp_path, text))
    return [(p.key, p.message) for p in info.value.problems]


def _bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnop"[:levels]
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_the_key_where_it_passes_the_bound(tmp_path):
    start = time.monotonic()
    found = _refused(tmp_path, _bomb() + "model: {top_k: *i}\n")
    assert time.monotonic() - start < 5  # it was 2.2 GB and 20 s, then a MemoryError
    assert len(found) == 1
    key, message = found[0]
    assert key == "e" and "aliases" in message and "131072" in message, found


def test_many_small_aliases_are_refused_at_the_key_that_takes_the_config_over(tmp_path):
    text = f"a: &a {'x' * 4000}\n" + "".join(f"b{i}: *a\n" for i in range(40))
    [(key, message)] = _refused(tmp_path, text)  # each b costs its key and a's 4001 characters
    assert key == "b31" and "passes 131072 characters" in message


def test_an_alias_to_the_collection_that_holds_it_is_refused(tmp_path):
    assert _refused(tmp_path, "model: &m {top_k: 5, self: *m}\n") == [
        ("model.self", "an alias (*) names a collection that holds it: a loop")]


def test_small_aliases_and_merge_keys_still_work(tmp_path):
    text = ("common: &common {after: move, done_dir: done, failed_dir: failed}\n"
            "sources:\n  - {<<: *common, name: a, type: folder, path: a}\n"
            "  - {<<: *common, name: b, type: folder, path: b}\noutput: {dir: results}\n")
    data, _ = load_yaml(_write(tmp_path, text))
    assert [s["done_dir"] for s in data["sources"]] == ["done", "done"]


def test_a_file_over_the_size_limit_is_refused_without_being_parsed(tmp_path):
    f = _write(tmp_path, "# " + "x" * 300_000 + "\n")
    with pytest.raises(InvalidConfig) as info:
        load_yaml(f)
    [(key, message)] = [(p.key, p.message) for p in info.value.problems]
    assert key == "<file>" and "300003 bytes" in message and "at most 131072 bytes" in message


def test_a_file_that_never_ends_is_refused_after_the_limit():
    with pytest.raises(InvalidConfig) as info:
        load_yaml("/dev/zero")
    assert "at most 131072 bytes" in info.value.problems[0].message


def test_a_config_at_the_size_limit_without_aliases_loads(tmp_path):
    # The expansion bound is the size bound: a file that fits is not refused for its aliases' sake.
    line = "  - " + "y" * 95 + "\n"
    text = "items:\n" + line * (130_000 // len(line))
    data, _ = load_yaml(_write(tmp_path, text))
    assert len(data["items"]) == 130_000 // len(line)


def test_deep_nesting_is_refused_naming_the_key(tmp_path):
    [(key, message)] = _refused(tmp_path, "model:\n  extra: " + "[" * 5000 + "]" * 5000 + "\n")
    assert key.startswith("model.extra[0][0]") and "deeper than 32" in message


def test_nesting_made_deep_by_an_alias_is_refused(tmp_path):
    deep = "[" * 20 + "]" * 20
    [(key, message)] = _refused(tmp_path, f"a: &a {deep}\nb: {'[' * 20}*a{']' * 20}\n")
    assert key.startswith("b[0]") and "deeper than 32" in message


@pytest.mark.parametrize("number", ["9" * 5000, "0x" + "f" * 5000, "1:" * 2000 + "1"])
def test_an_integer_of_thousands_of_digits_is_refused_naming_the_key(tmp_path, number):
    [(key, message)] = _refused(tmp_path, f"metrics: {{port: {number}}}\n")
    assert key == "metrics.port" and f"{len(number)} characters" in message and len(message) < 300


@pytest.mark.parametrize("value, why", [("2001-13-45", "month must be in 1..12"),
                                        ("!!int abc", "invalid literal"), ("!!bool maybe", "maybe"),
                                        ("!!timestamp x", "timestamp")])
def test_a_value_yaml_cannot_construct_names_its_key(tmp_path, value, why):
    [(key, message)] = _refused(tmp_path, f"model:\n  top_k: {value}\n")
    assert key == "model.top_k" and why in message, message


def test_a_duplicate_key_of_any_length_is_named_cut(tmp_path):
    long = "k" * 50_000
    # "? key": a key longer than 1024 characters must be explicit
    [(key, message)] = _refused(tmp_path, f"? {long}\n: 1\n? {long}\n: 2\n")
    assert key == "<file>" and "duplicate key" in message and "(cut: " in message
    assert len(message) < 1000


def test_a_long_value_in_a_message_is_cut_and_says_how_much(tmp_path):
    found = _refused(tmp_path, yaml.safe_dump({**GOOD, "model": {"top_k": "x" * 100_000}}))
    [(key, message)] = found
    assert key == "model.top_k" and message.startswith("must be an integer, got 'xxx")
    assert message.endswith("(cut: 99942 characters)") and len(message) < 200


def test_a_long_unknown_key_is_cut_in_its_key_path(tmp_path):
    [(key, message)] = _refused(tmp_path, yaml.safe_dump({**GOOD, "z" * 100_000: 1}))
    assert message == "unknown key" and key.startswith("zzz")
    assert key.endswith("(cut: 99800 characters)")


def test_the_list_of_problems_is_bounded_and_says_how_many_more():
    problems = [ConfigError(f"k{i}", "unknown key") for i in range(5000)]
    text = str(InvalidConfig("c.yaml", problems))
    assert text.startswith("c.yaml: 5000 problem(s)")
    assert "k19: unknown key" in text and "k20:" not in text
    assert text.endswith("... and 4980 more not listed") and len(text.splitlines()) == 22


def test_a_config_error_cuts_whatever_it_is_given():
    e = ConfigError("a" * 10_000, "got " + "b" * 10_000)
    assert len(str(e)) < 1000 and "(cut: 9800 characters)" in e.key and "(cut: " in e.message
