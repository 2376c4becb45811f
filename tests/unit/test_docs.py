"""The manual: README.md is a short front door, docs/ is a site that builds, no link in either leads
nowhere, and the configuration reference is the schema's own, so that no key can be missing."""
from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.support.markdown import ROOT, anchors, config_table, links

README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
MAX_README_WORDS = 1500


@functools.cache
def _generator():
    """docs/gen_config_reference.py: no module of the package (the site's build runs it too)."""
    path = DOCS / "gen_config_reference.py"
    spec = importlib.util.spec_from_file_location("gen_config_reference", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _keys() -> list[str]:
    return [e.key for g in _generator().groups() for e in g.entries]


def test_the_committed_configuration_reference_is_what_the_schema_gives():
    gen = _generator()
    assert gen.PAGE.read_text(encoding="utf-8") == gen.render(), (
        "docs/config-reference.md is stale: run `make docs` (python docs/gen_config_reference.py)")


def test_every_config_key_has_its_entry_in_the_reference():
    page = _generator().PAGE.read_text(encoding="utf-8")
    missing = [k for k in _keys() if f"| `{k}` |" not in page]
    assert not missing, f"docs/config-reference.md lacks {missing}"


def test_the_walk_reaches_every_key_and_section_the_configuration_page_names():
    keys = set(_keys())
    sections = {k.rsplit(".", i)[0] for k in keys for i in range(1, k.count(".") + 1)}
    unknown = sorted(set(config_table()) - keys - sections)
    assert not unknown, f"docs/configuration.md names, the generated reference lacks: {unknown}"


def test_the_reference_shows_what_each_setting_declares():
    page = _generator().PAGE.read_text(encoding="utf-8")
    assert "| `sources[].fps` | `2.0` | number, > 0, <= 60 | frames classified per second |" in page
    assert "| `output.dir` | required | path |" in page
    assert "| `sources[].frames` | `null` | one of `all`, `changes` |" in page
    assert "## `sources[]` with `type: camera`" in page
    assert "## `sources[]` with `type: folder`" in page
    # The file's own path, and where a region was read from, are no keys.
    assert not {"path", "sources[].regions[].key"} & set(_keys())


def test_the_readme_is_a_front_door_of_at_most_1500_words():
    words = len(README.read_text(encoding="utf-8").split())
    assert words <= MAX_README_WORDS, f"README.md has {words} words; move the detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md"
                         or anchor not in anchors(dest.read_text(encoding="utf-8"))):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, broken


def test_the_link_check_sees_links_outside_code_and_headings_anchors(tmp_path):
    text = "# A title\n\n[ok](#a-title) [gone](missing.md) [x](p.md#nowhere) `[code](x.md)`\n"
    assert list(links(text)) == ["#a-title", "missing.md", "p.md#nowhere"]
    assert anchors(text) == {"a-title"}


def test_the_site_builds_with_strict_checks(mkdocs_module, tmp_path):
    """mkdocs --strict fails on any warning: a page left out of the nav, a broken link or anchor."""
    before = (DOCS / "config-reference.md").read_bytes()
    site = tmp_path / "site"
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    env = {**os.environ, _generator().CHECK_ENV: "1"}  # a stale page fails, left as it is
    run = subprocess.run(build, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (site / "config-reference.html").exists()
    # theme.font: false: no Google Fonts, so the site reads offline on a device.
    assert "fonts.googleapis.com" not in (site / "index.html").read_text(encoding="utf-8")
    assert (DOCS / "config-reference.md").read_bytes() == before
