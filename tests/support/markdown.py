"""Reading the manual's Markdown in tests: headings' anchors, links, and the configuration table."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
CONFIG_PAGE = ROOT / "docs" / "configuration.md"


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans, where a ``](`` is no link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """A heading's anchor, as MkDocs' toc and GitHub make it for the headings this manual uses."""
    text = re.sub(r"<[^>]+>", "", heading.replace("`", ""))
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(text: str) -> set[str]:
    """The anchors of a Markdown page's headings."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+?)\s*#*$", text, flags=re.M)}


def links(text: str) -> Iterator[str]:
    """The targets of a page's Markdown links and images, outside code."""
    for m in re.finditer(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(text)):
        yield m.group(1)


def config_table(page: Path = CONFIG_PAGE) -> dict[str, str]:
    """docs/configuration.md's table as {key: its default cell}; "`a.b`, `c`" is a.b and a.c."""
    rows: dict[str, str] = {}
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.split("|")[1:3]]
        keys = re.findall(r"`([^`]+)`", cells[0])
        prefix = keys[0].rsplit(".", 1)[0] + "." if "." in keys[0] else ""
        defaults = cells[1].split(", ")
        assert len(defaults) in (1, len(keys)), f"{cells[0]}: one default, or one per key"
        for i, k in enumerate(keys):
            rows[k if "." in k else prefix + k] = defaults[i if len(defaults) > 1 else 0]
    return rows
