"""Reading one YAML mapping into typed values, collecting every problem with its dotted key path.

``Section`` reads one key at a time: ``integer``, ``number``, ``flag``, ``text``, ``choice``,
``optional_path``, nested ``section``s, and ``finish`` to flag unknown keys. The schema
(``schema/``, assembled by ``config.py``) declares each field once with ``setting`` (default, rule,
doc), and ``read`` turns a dataclass of such fields into those calls.
``load_yaml`` (``parsing/bounded_yaml.py``) reads the file itself, within bounds.
"""
from __future__ import annotations

import math
import os
import re
import string
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, TypeVar, get_args, get_origin, get_type_hints

from .errors import ConfigError, cut
# Re-exported: config.py and ops/web_config.py read their files through it.
from .parsing.bounded_yaml import load_yaml as load_yaml

ABSENT: Any = object()  # the key is not in the mapping (unlike an explicit null)
REQUIRED: Any = object()  # as a default: the key must be given
# Stands in for a required path that is missing or invalid; never valid (real ones are absolute),
# and a config holding it is always discarded with its problems.
UNSET = Path()
_T = TypeVar("_T")


def parsed(*paths: Path | None) -> bool:
    """True when every path parsed (a missing or invalid one is None or ``UNSET``)."""
    return all(p is not None and p.is_absolute() for p in paths)


def _fields_of(template: str) -> set[str]:
    try:
        return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError:  # an unbalanced brace
        return {"{"}


def show(v: Any) -> str:
    """A value as the user wrote it in YAML (``true``, ``null``), shortened."""
    text = "null" if v is None else ("true" if v else "false") if isinstance(v, bool) else repr(v)
    return cut(text, 60)


class Section:
    """One mapping of the config: reads typed fields, collects problems, flags keys nobody read."""

    def __init__(self, data: Any, where: str, problems: list[ConfigError], base_dir: Path,
                 quiet: bool = False):
        self.where, self.problems, self.base_dir, self.quiet = where, problems, base_dir, quiet
        self.seen: set[Any] = set()
        if data is not None and not isinstance(data, dict):
            problems.append(ConfigError(where or "<root>", f"must be a mapping, got {show(data)}"))
            # Whatever is reported below it would only be a consequence of this one problem.
            self.quiet = True
        self.data: dict[Any, Any] = data if isinstance(data, dict) else {}

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, message: str) -> None:
        if not self.quiet:
            self.problems.append(ConfigError(self.key(name), message))

    def child(self, where: str, data: Any) -> Section:
        return Section(data, where, self.problems, self.base_dir, self.quiet)

    def raw(self, name: str) -> Any:
        self.seen.add(name)
        return self.data.get(name, ABSENT)

    def finish(self) -> None:
        for k in self.data:
            if k not in self.seen:
                self.error(str(k), "unknown key")

    def section(self, name: str, parse: Callable[[Section], _T]) -> _T:
        v = self.raw(name)
        sub = self.child(self.key(name), None if v is ABSENT else v)
        result = parse(sub)
        sub.finish()
        return result

    def _get(self, name: str, default: Any) -> Any:
        # Absent takes the default; an explicit null is only "absent" for a required key, else a
        # type error.
        v = self.raw(name)
        if default is REQUIRED and v in (ABSENT, None):
            self.error(name, "required")
            return ABSENT
        return default if v is ABSENT else v

    def _check_range(self, name: str, v: float, gt: float | None, ge: float | None,
                     le: float | None) -> None:
        for ok, rule in ((gt is None or v > gt, f"> {gt}"), (ge is None or v >= ge, f">= {ge}"),
                         (le is None or v <= le, f"<= {le}")):
            if not ok:
                self.error(name, f"must be {rule}, got {show(v)}")
                return

    def integer(self, name: str, default: int, *, ge: int | None = None,
                le: int | None = None) -> int:
        v = self._get(name, default)
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(name, f"must be an integer, got {show(v)}")
            return default
        self._check_range(name, v, None, ge, le)
        return v

    def number(self, name: str, default: float, *, gt: float | None = None, ge: float | None = None,
               le: float | None = None) -> float:
        v = self._get(name, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.error(name, f"must be a number, got {show(v)}")
            return default
        if not math.isfinite(v):  # NaN would slip through every range check
            self.error(name, f"must be a finite number, got {show(v)}")
            return default
        self._check_range(name, v, gt, ge, le)
        return float(v)

    def flag(self, name: str, default: bool) -> bool:
        v = self._get(name, default)
        if not isinstance(v, bool):
            self.error(name, f"must be true or false, got {show(v)}")
            return default
        return v

    def text(self, name: str, default: str = REQUIRED, pattern: re.Pattern[str] | None = None,
             placeholders: tuple[str, ...] | None = None) -> str:
        """``placeholders``: the text is a str.format template that may use only these fields."""
        v = self._get(name, default)
        if v is ABSENT:
            return ""
        if not isinstance(v, str):
            self.error(name, f"must be a string, got {show(v)}")
        elif not v.strip():
            self.error(name, "must not be empty")
        # fullmatch: "$" would accept a trailing newline
        elif pattern is not None and not pattern.fullmatch(v):
            self.error(name, f"must match {pattern.pattern}, got {show(v)}")
        elif placeholders is not None and not _fields_of(v) <= set(placeholders):
            names = " and ".join(f"{{{f}}}" for f in placeholders)
            plural = "s" if len(placeholders) > 1 else ""
            self.error(name, f"may only use the placeholder{plural} {names}, got {v!r}")
        return v if isinstance(v, str) else ""

    def choice(self, name: str, default: Any, options: tuple[Any, ...]) -> Any:
        v = self._get(name, default)
        # type(): True == 1 and 1.0 == 1 in Python
        if type(v) is not type(default) or v not in options:
            self.error(name, f"must be one of {', '.join(map(str, options))}, got {show(v)}")
            return default
        return v

    def subset(self, name: str, default: tuple[str, ...],
               options: tuple[str, ...]) -> tuple[str, ...]:
        """A non-empty list of some of ``options`` (matched without regard to case), in the order
        given."""
        v = self._get(name, default)
        if v is default:
            return default
        by_lower = {o.lower(): o for o in options}
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            self.error(name, f"must be a non-empty list of {', '.join(options)}, got {show(v)}")
            return default
        unknown = [x for x in v if x.lower() not in by_lower]
        if unknown:
            self.error(name, f"must be some of {', '.join(options)}, got {show(unknown)}")
            return default
        return tuple(dict.fromkeys(by_lower[x.lower()] for x in v))

    def optional_section(self, name: str, parse: Callable[[Section], _T]) -> _T | None:
        """A section that may be left out; absent or null is None."""
        return None if self.raw(name) in (ABSENT, None) else self.section(name, parse)

    def optional_text(self, name: str, pattern: re.Pattern[str] | None = None) -> str | None:
        return None if self.raw(name) in (ABSENT, None) else self.text(name, pattern=pattern)

    def optional_path(self, name: str, required: bool = False,
                      placeholders: tuple[str, ...] = ()) -> Path | None:
        v = self.raw(name)
        if v in (ABSENT, None):
            if required:
                self.error(name, "required")
            return None
        if not isinstance(v, str) or not v.strip():
            self.error(name, f"must be a non-empty path, got {show(v)}")
            return None
        if ("{" in v or "}" in v) and not _fields_of(v) <= set(placeholders):  # str.format fields
            names = " ".join(f"{{{f}}}" for f in placeholders)
            self.error(name, f"may only use the placeholder(s) {names}, got {v!r}")
            return None
        try:
            p = Path(v).expanduser()
        except RuntimeError as e:  # ~user that does not exist, or no home directory at all
            self.error(name, f"cannot expand {v!r}: {e}")
            return None
        # normpath, not resolve(): no filesystem access while parsing, and the folders may not
        # exist yet.
        return Path(os.path.normpath(self.base_dir / p))

    def path(self, name: str, placeholders: tuple[str, ...] = ()) -> Path:
        return self.optional_path(name, required=True, placeholders=placeholders) or UNSET


@dataclass(frozen=True)
class Rule:
    """How one config field is read; its type comes from the field's annotation."""
    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None  # Literal fields take theirs from the annotation
    pattern: re.Pattern[str] | None = None
    placeholders: tuple[str, ...] | None = None  # a str.format template using only these fields


def setting(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, choices: tuple[Any, ...] | None = None,
            pattern: str | re.Pattern[str] | None = None,
            placeholders: tuple[str, ...] | None = None) -> Any:
    """A dataclass field declaring its default (``REQUIRED``: none), its rule and its one-line doc
    together."""
    rule = Rule(doc, ge=ge, gt=gt, le=le, choices=choices,
                pattern=None if pattern is None else re.compile(pattern), placeholders=placeholders)
    if default is REQUIRED:
        return field(metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


_READERS: dict[Any, Callable[..., Any]] = {bool: Section.flag, int: Section.integer,
                                           float: Section.number, str: Section.text}
_OPTIONAL_READERS: dict[Any, Callable[..., Any]] = {Optional[str]: Section.optional_text,
                                                    Optional[Path]: Section.optional_path}


def _read_field(s: Section, f: Field[Any], hint: Any) -> Any:
    rule: Rule | None = f.metadata.get("rule")
    if rule is None:
        if isinstance(hint, type) and is_dataclass(hint):  # a nested section, read the same way
            return s.section(f.name, lambda sub: read(sub, hint))
        raise TypeError(f"{f.name}: declare it with setting() or parse it in the caller")
    default = REQUIRED if f.default is MISSING else f.default
    # Only the limits a rule sets are passed on, so one that does not fit its type fails (a
    # TypeError) at once.
    limits = {k: v for k, v in (("ge", rule.ge), ("gt", rule.gt), ("le", rule.le),
                                ("pattern", rule.pattern), ("placeholders", rule.placeholders))
              if v is not None}
    if get_origin(hint) is tuple and rule.choices is not None:  # some of the choices, as a list
        return s.subset(f.name, default, rule.choices)
    if rule.choices is not None or get_origin(hint) is Literal:
        return s.choice(f.name, default, rule.choices or get_args(hint), **limits)
    if hint is Path:
        return s.path(f.name, **limits)
    if hint in _OPTIONAL_READERS:  # absent or null is None
        if default not in (None, REQUIRED):
            raise TypeError(f"{f.name}: an optional setting defaults to None, not {default!r}")
        return _OPTIONAL_READERS[hint](s, f.name, **limits)
    if hint not in _READERS:
        raise TypeError(f"{f.name}: no reader for {hint}")
    return _READERS[hint](s, f.name, default, **limits)


def read(section: Section, cls: type[_T], **custom: Callable[[Section], Any]) -> _T:
    """``cls`` read from ``section`` field by field, in declaration order, so that no field is left
    unread.

    ``custom`` parses the fields the caller reads itself (one function of the section each); every
    other field is read by its ``setting`` rule, or, if it is a dataclass, as a nested section.
    Field order is kept so that problems are listed in the order of the schema.
    """
    names = {f.name for f in fields(cls)}
    if custom.keys() - names:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(custom.keys() - names))}")
    # get_type_hints: the annotations are strings (from __future__ import annotations).
    hints = get_type_hints(cls)
    return cls(**{f.name: custom[f.name](section) if f.name in custom
                  else _read_field(section, f, hints[f.name]) for f in fields(cls)})
