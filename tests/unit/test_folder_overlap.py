"""Overlapping folders, judged on the real folders (symlinks resolved): what check-config and run
refuse beyond the paths as written. Real folders and links in tmp_path; each names its key."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_infer.config import load_config
from edge_infer.errors import InvalidConfig
from edge_infer.ops.folder_overlap import folder_overlaps
from edge_infer.ops.preflight import check_supported


def _folder(name: str, path: str, **keys: Any) -> dict[str, Any]:
    return {"name": name, "type": "folder", "path": path, "after": "move",
            "done_dir": f"{name}-done", "failed_dir": f"{name}-failed", **keys}


def _problems(tmp_path: Path, sources: list[dict], **output: Any) -> list[tuple[str, str]]:
    f = tmp_path / "config.yaml"
    f.write_text(yaml.safe_dump({"sources": sources, "output": {"dir": "results", **output}}))
    return [(p.key, p.message) for p in folder_overlaps(load_config(f))]


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    (tmp_path / "alias").symlink_to("in")
    return tmp_path / "in"


def test_separate_folders_pass(tmp_path, inbox):
    assert _problems(tmp_path, [_folder("a", "in"), _folder("b", "other")]) == []


def test_two_sources_on_one_folder_through_a_symlink(tmp_path, inbox):
    found = _problems(tmp_path, [_folder("a", "in"), _folder("b", "alias")])
    assert [k for k, _ in found] == ["sources[1].path"]
    assert "sources[0].path" in found[0][1] and f"resolves to {inbox}" in found[0][1]


def test_a_source_inside_a_recursive_one_either_order(tmp_path, inbox):
    found = _problems(tmp_path, [_folder("a", "in"), _folder("b", "alias/sub")])
    assert [k for k, _ in found] == ["sources[1].path"]
    found = _problems(tmp_path, [_folder("b", "alias/sub"), _folder("a", "in")])
    assert [k for k, _ in found] == ["sources[1].path"] and "sources[0].path" in found[0][1]


def test_a_source_below_a_non_recursive_one_is_fine(tmp_path, inbox):
    sources = [_folder("a", "in", recursive=False), _folder("b", "alias/sub")]
    assert _problems(tmp_path, sources) == []


@pytest.mark.parametrize("key, value", [
    ("done_dir", "alias/done"),  # a symlink on the way
    ("failed_dir", "alias/x/y/failed"),  # ... with a tail not made yet
    ("done_dir", "alias/sorted/{label}"),  # the fixed root of per-class folders
])
def test_an_output_folder_resolving_into_the_inbox(tmp_path, inbox, key, value):
    found = _problems(tmp_path, [_folder("a", "in", **{key: value})])
    assert [k for k, _ in found] == [f"sources[0].{key}"] and "sources[0].path" in found[0][1]


def test_a_dangling_symlink_is_followed_to_where_it_would_lead(tmp_path, inbox):
    (tmp_path / "done").symlink_to(inbox / "done")  # in/done does not exist (yet)
    found = _problems(tmp_path, [_folder("a", "in", done_dir="done")])
    assert [k for k, _ in found] == ["sources[0].done_dir"] and str(inbox / "done") in found[0][1]


def test_a_failed_dir_inside_another_sources_inbox(tmp_path, inbox):
    found = _problems(tmp_path, [_folder("a", "in"), _folder("b", "other", failed_dir="in/failed")])
    assert [k for k, _ in found] == ["sources[1].failed_dir"] and "'a'" in found[0][1]


def test_output_dir_and_spool_into_an_inbox(tmp_path, inbox):
    found = _problems(tmp_path, [_folder("a", "in")], dir="alias/results")
    assert [k for k, _ in found] == ["output.dir"]
    spool = {"host": "h", "spool_dir": "alias/spool"}
    found = _problems(tmp_path, [_folder("a", "in")], mqtt=spool)
    assert [k for k, _ in found] == ["output.mqtt.spool_dir"]


def test_a_source_inside_another_sources_output(tmp_path, inbox):
    found = _problems(tmp_path, [_folder("a", "in"), _folder("b", "a-done/b")])
    assert [k for k, _ in found] == ["sources[1].path"] and "sources[0].done_dir" in found[0][1]
    found = _problems(tmp_path, [_folder("a", "in"), _folder("b", "results/b")])
    assert [k for k, _ in found] == ["sources[1].path"] and "output.dir" in found[0][1]


def test_an_unused_done_dir_is_not_judged(tmp_path, inbox):
    assert _problems(tmp_path, [_folder("a", "in", after="keep", done_dir="alias/done")]) == []


def test_check_supported_refuses_with_every_problem(tmp_path, inbox):
    f = tmp_path / "config.yaml"
    sources = [_folder("a", "in", done_dir="alias/done"), _folder("b", "alias")]
    f.write_text(yaml.safe_dump({"sources": sources, "output": {"dir": "results"}}))
    with pytest.raises(InvalidConfig) as info:
        check_supported(load_config(f))
    assert info.value.path == str(f)
    assert {p.key for p in info.value.problems} == {"sources[1].path", "sources[0].done_dir"}
