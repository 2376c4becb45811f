"""The config schema declared once: every field has a rule and a doc, is read, and is in the manual's table
(docs/configuration.md; the generated reference is checked by test_docs.py).

Everything here is built from the dataclasses themselves, so a field added to one is checked without
touching this file (unless it is required or has a pattern: then it needs a valid value below).
"""
from __future__ import annotations

import re
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Optional, Union, get_args, get_origin, get_type_hints

import pytest

from edge_infer.config import AppConfig, FolderSourceConfig, RegionConfig, parse_config
from edge_infer.config_reader import Rule, Section, read, setting
from tests.support.markdown import config_table

# The file the config came from, set by load_config; where a region was read from, to name it in later errors.
NOT_KEYS = {(AppConfig, "path"), (RegionConfig, "key")}
# Values the schema cannot make up: required keys, and keys with a pattern.
GIVEN = {
    # {label} needs after: move, and min_score needs {label}: each source's after or min_score is left default.
    "sources": [{"name": "drops", "type": "folder", "path": "in", "done_dir": "done/{label}", "failed_dir": "failed",
                 "after": "move"},
                {"name": "plain", "type": "folder", "path": "in2", "done_dir": "done2", "failed_dir": "failed2",
                 "min_score": 0.0},
                {"name": "cam0", "type": "camera", "url": "rtsp://127.0.0.1:8554/cam", "video_size": "640x480",
                 "frames": "all", "regions": [{"name": "door", "crop": [0, 0.25, 0.5, 1], "states": ["open", "shut"],
                                               "threshold": 0.7, "sample_below": 0.9,
                                               "model": {"path": "door.onnx"}}]}],
    "output": {"dir": "results", "mqtt": {"host": "broker", "discovery_prefix": "ha"}},
}


def _sections(hint: Any) -> tuple[tuple[type, ...], str]:
    """The sections a field holds and how its key goes on (``.`` or ``[].``); no sections: it is a setting."""
    if get_origin(hint) is tuple:  # tuple[Union[A, B], ...]: a list of sections of several types
        inner = get_args(get_args(hint)[0]) or (get_args(hint)[0],)
        if all(isinstance(t, type) and is_dataclass(t) for t in inner):
            return inner, "[]."
        return (), "."  # a list of values: one setting
    inner = [t for t in get_args(hint) if t is not type(None)] if get_origin(hint) is Union else [hint]
    found = tuple(t for t in inner if isinstance(t, type) and is_dataclass(t))
    return found, "."


def _settings(cls: type, prefix: str = "") -> Iterator[tuple[str, Field[Any], Any]]:
    """(dotted key, field, resolved type) of every setting under ``cls``."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        if (cls, f.name) in NOT_KEYS:
            continue
        subs, sep = _sections(hints[f.name])
        if not subs:
            yield prefix + f.name, f, hints[f.name]
        for sub in subs:
            yield from _settings(sub, prefix + f.name + sep)


def _choices(f: Field[Any], hint: Any) -> tuple[Any, ...] | None:
    return f.metadata["rule"].choices or (get_args(hint) if get_origin(hint) is Literal else None)


def _other(key: str, f: Field[Any], hint: Any) -> Any:
    """A valid value for a setting that is not its default."""
    rule: Rule = f.metadata["rule"]
    assert f.default is not MISSING, f"{key} is required: give it a valid value in GIVEN"
    assert rule.pattern is None, f"{key} has a pattern: give it a valid value in GIVEN"
    if get_origin(hint) is tuple:  # a list of some of the choices
        return list(f.default[:-1])
    choices = _choices(f, hint)
    if choices:
        return next((c for c in choices if c != f.default), f.default)  # a source's type has one choice
    if hint is bool:
        return not f.default
    if hint in (int, float):
        up = f.default + 1
        return up if rule.le is None or up <= rule.le else f.default - 1
    if hint is str:
        return f.default + "/x"

    return {Optional[str]: "x", Optional[Path]: f"{f.name}-x"}[hint]


def _filled(cls: type, given: dict[str, Any], base: Path, prefix: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """A document setting every key under ``cls``, and the value each (indexed) key should parse to."""
    doc, want = dict(given), {}
    hints = get_type_hints(cls)
    for f in fields(cls):
        key, hint = prefix + f.name, hints[f.name]
        subs, sep = _sections(hint)
        if (cls, f.name) in NOT_KEYS:
            continue
        if sep == "[].":  # the sources: each item's type says which section it is (a region has one kind)
            by_type = {get_args(get_type_hints(c)["type"])[0] if "type" in get_type_hints(c) else None: c
                       for c in subs}
            items = [_filled(by_type[item.get("type")], item, base, f"{key}[{i}].")
                     for i, item in enumerate(given.get(f.name, []))]
            doc[f.name] = [d for d, _ in items]
            for _, w in items:
                want.update(w)
        elif subs:
            doc[f.name], w = _filled(subs[0], given.get(f.name, {}), base, key + ".")
            want.update(w)
        else:
            if f.name not in given:
                doc[f.name] = _other(key, f, hint)
                assert doc[f.name] != f.default or len(_choices(f, hint) or ()) == 1, key
            want[key] = (base / doc[f.name] if hint in (Path, Optional[Path])
                         else tuple(doc[f.name]) if isinstance(doc[f.name], list) else doc[f.name])
    return doc, want


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A parsed config as {indexed dotted key: value}."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if (type(obj), f.name) in NOT_KEYS:
            continue
        if is_dataclass(v):
            out.update(_flat(v, f"{prefix}{f.name}."))
        elif isinstance(v, tuple) and v and is_dataclass(v[0]):
            for i, item in enumerate(v):
                out.update(_flat(item, f"{prefix}{f.name}[{i}]."))
        else:
            out[prefix + f.name] = v
    return out


SETTINGS = list(_settings(AppConfig))


@pytest.mark.parametrize("key, f, hint", SETTINGS, ids=[f"{k}:{f.name}" for k, f, _ in SETTINGS])
def test_every_setting_declares_a_rule_and_a_doc(key, f, hint):
    rule = f.metadata.get("rule")
    assert isinstance(rule, Rule), f"{key}: declare it with setting(default, doc, ...)"
    assert rule.doc.strip() and "\n" not in rule.doc, f"{key}: a one-line doc"
    # get_type_hints cannot evaluate "X | None" on Python 3.9 (and only 3.11 runs these tests)
    assert "|" not in str(f.type), f"{key}: write Optional[...] or Union[...], not {f.type}"


def test_every_setting_is_read_back_from_a_non_default_value(tmp_path):
    doc, want = _filled(AppConfig, GIVEN, tmp_path)
    cfg = parse_config(doc, tmp_path)
    typed = {k: (type(v), v) for k, v in want.items()}  # 3 is not 3.0: a float setting must come back a float
    assert {k: (type(v), v) for k, v in _flat(cfg).items()} == typed


def test_a_dataclass_field_with_no_setting_is_refused_not_skipped(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Forgotten:
        declared: int = setting(1, "declared")
        forgotten: int = 2

    with pytest.raises(TypeError, match="forgotten"):
        read(Section({}, "", [], tmp_path), Forgotten)
    assert read(Section({}, "", [], tmp_path), Forgotten, forgotten=lambda _: 3) == Forgotten(1, 3)


def test_a_folder_source_read_with_the_defaults(tmp_path):
    """The generic reader gives what the dataclass would: the defaults where a key is left out."""
    cfg = parse_config(GIVEN, tmp_path)
    assert cfg.sources[0] == FolderSourceConfig(name="drops", path=tmp_path / "in",
                                                done_dir=tmp_path / "done" / "{label}",
                                                failed_dir=tmp_path / "failed")


def test_every_setting_is_in_the_configuration_pages_table():
    table = config_table()
    missing = sorted({key for key, _, _ in SETTINGS} - table.keys())
    assert not missing, f"docs/configuration.md's table lacks {missing}"


def _simple(cell: str) -> Any:
    """A table's default that can be compared: a number, `true`, `false` or `null`; else ``MISSING``."""
    if re.fullmatch(r"\d[\d,]*(\.\d+)?", cell):
        return float(cell.replace(",", ""))
    return {"`true`": True, "`false`": False, "`null`": None}.get(cell, MISSING)


def test_the_configuration_pages_defaults_agree_with_the_dataclasses():
    table = config_table()
    wrong = []
    for key, f, _ in SETTINGS:
        shown = _simple(table.get(key, ""))
        if shown is MISSING:
            continue
        same = (f.default is shown if shown is None or isinstance(shown, bool)
                else not isinstance(f.default, bool) and f.default == shown)
        if not same:
            wrong.append(f"{key}: docs/configuration.md {table[key]}, dataclass {f.default!r}")
    assert not wrong, wrong
