"""Writes docs/config-reference.md from the config schema's own declarations: every key, its
default, its type and bounds, and the one-line doc its ``setting()`` gives: no key can be missing.

Run by ``make docs`` (``python docs/gen_config_reference.py``; ``--check`` only compares) and, as an
MkDocs hook (mkdocs.yml ``hooks:``), before every build. tests/unit/test_docs.py checks that the
committed page is what this writes. The schema is reached through ``edge_infer.config.AppConfig``
alone, the class ``load_config`` returns, and walked with ``dataclasses``: whichever modules declare
the sections, a key is a dataclass field carrying a ``rule`` (``setting()``) or a nested section.
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Union, get_args, get_origin, get_type_hints

PAGE = Path(__file__).resolve().parent / "config-reference.md"
CHECK_ENV = "EDGE_INFER_DOCS_CHECK"
HEADER = """# Configuration reference

<!-- Generated from the schema (edge_infer.config) by docs/gen_config_reference.py: do not edit. -->

Every key of the config file, as the schema declares it: its default, its type and bounds, and
what it does. `required`: the key must be given. Unknown keys are errors; relative paths are
relative to the config file's folder. The [Configuration](configuration.md) page says more about
many of them, with the bounds on the file itself and the folders that may not overlap.
"""


@dataclass(frozen=True)
class Entry:
    key: str
    default: str
    kind: str
    doc: str


@dataclass(frozen=True)
class Group:
    title: str
    note: str
    entries: tuple[Entry, ...]


def _schema() -> type:
    from edge_infer.config import AppConfig
    return AppConfig


def _sections(hint: Any) -> tuple[tuple[type, ...], bool]:
    """The sections a field holds, and whether it is a list of them; none: it is not a section."""
    if get_origin(hint) is tuple:
        inner = get_args(get_args(hint)[0]) or (get_args(hint)[0],)
        found = tuple(t for t in inner if isinstance(t, type) and is_dataclass(t))
        return found, True
    inner = [hint]
    if get_origin(hint) is Union:
        inner = [t for t in get_args(hint) if t is not type(None)]
    return tuple(t for t in inner if isinstance(t, type) and is_dataclass(t)), False


def _md(text: str) -> str:
    """Schema text in a table cell, shown as written (Python's None is YAML's null)."""
    text = re.sub(r"\bNone\b", "null", text)
    for a, b in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), ("*", "\\*"), ("_", "\\_")):
        text = text.replace(a, b)
    return text


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if v is None:
        return "`null`"
    if isinstance(v, tuple):
        return "`[" + ", ".join(str(x) for x in v) + "]`"
    if isinstance(v, int) and v >= 1 << 20 and v % (1 << 20) == 0:
        return f"`{v}` ({v >> 20} MiB)"
    return f"`{v}`"


def _default(f: Field[Any]) -> str:
    return "required" if f.default is MISSING else _value(f.default)


def _type(hint: Any) -> str:
    names = {bool: "`true` or `false`", int: "integer", float: "number", str: "text", Path: "path"}
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(f"`{c}`" for c in get_args(hint))
    if get_origin(hint) is Union:
        inner = [t for t in get_args(hint) if t is not type(None)]
        return _type(inner[0]) + " or `null`"
    if get_origin(hint) is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return "a list of " + _type(args[0])
        return f"a list of {len(args)} " + _type(args[0]) + "s"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _kind(f: Field[Any], hint: Any) -> str:
    rule = f.metadata["rule"]
    parts = [_type(hint)]
    if rule.choices is not None:
        some = "some of " if get_origin(hint) is tuple else "one of "
        parts = [some + ", ".join(f"`{c}`" for c in rule.choices)]
    for name, sign in (("ge", ">="), ("gt", ">"), ("le", "<=")):
        bound = getattr(rule, name, None)
        if bound is not None:
            parts.append(f"{sign} {bound}")
    pattern = getattr(rule, "pattern", None)
    if pattern is not None and re.fullmatch(r"[\w-]+(\|[\w-]+)+", pattern.pattern):
        parts = ["one of " + ", ".join(f"`{c}`" for c in pattern.pattern.split("|"))]
    elif pattern is not None:
        parts.append(f"matching `{pattern.pattern}`")
    if getattr(rule, "placeholders", None):
        parts.append("placeholders " + ", ".join("`{" + p + "}`" for p in rule.placeholders))
    return ", ".join(parts)


def groups(cls: type | None = None, prefix: str = "", title: str = "",
           note: str = "") -> Iterator[Group]:
    """The schema's sections in declaration order, each with the settings it declares itself."""
    cls = cls or _schema()
    hints = get_type_hints(cls)
    own: list[Entry] = []
    nested: list[tuple[type, str, str, str]] = []
    for f in fields(cls):
        hint = hints[f.name]
        if "rule" in f.metadata:
            own.append(Entry(prefix + f.name, _default(f), _kind(f, hint), f.metadata["rule"].doc))
            continue
        subs, is_list = _sections(hint)
        key = prefix + f.name + ("[]" if is_list else "")
        for sub in subs:
            sub_hints = get_type_hints(sub)
            typed = len(subs) > 1 and "type" in sub_hints  # a list of several kinds, told by type
            which = get_args(sub_hints["type"])[0] if typed else None
            sub_title = f"`{key}`" + (f" with `type: {which}`" if which else "")
            sub_note = ("A list: each item holds the keys below." if is_list
                        else "Optional: may be left out, or `null`." if f.default is None else "")
            nested.append((sub, key + ".", sub_title, sub_note))
        # A field with neither a rule nor a section is no key (the file's own path, where an item
        # was read from).
    if own:
        yield Group(title or "top level", note, tuple(own))
    for sub, sub_prefix, sub_title, sub_note in nested:
        yield from groups(sub, sub_prefix, sub_title, sub_note)


def render() -> str:
    out = [HEADER]
    for g in groups():
        out.append(f"\n## {g.title}\n")
        if g.note:
            out.append(f"\n{g.note}\n")
        out.append("\n| key | default | type | meaning |\n|---|---|---|---|\n")
        out.extend(f"| `{e.key}` | {e.default} | {e.kind} | {_md(e.doc)} |\n" for e in g.entries)
    return "".join(out)


def write(page: Path = PAGE) -> bool:
    """Writes the page if it differs; True if it did."""
    text = render()
    if page.exists() and page.read_text(encoding="utf-8") == text:
        return False
    page.write_text(text, encoding="utf-8")
    return True


def on_pre_build(config: Any) -> None:
    """MkDocs hook: the site always shows the schema as it is. With ``EDGE_INFER_DOCS_CHECK`` set (the
    tests), a stale page fails the build instead of being rewritten in the source tree."""
    if not os.environ.get(CHECK_ENV):
        write()
    elif PAGE.read_text(encoding="utf-8") != render():
        from mkdocs.exceptions import PluginError
        raise PluginError(f"{PAGE} is stale: run make docs")


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = not PAGE.exists() or PAGE.read_text(encoding="utf-8") != render()
        print(f"{PAGE}: {'stale: run make docs' if stale else 'up to date'}")
        return 1 if stale else 0
    print(f"{PAGE}: {'written' if write() else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
