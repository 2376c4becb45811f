"""Reading one YAML mapping into typed values, collecting every problem with its dotted key path.

``Section`` is the whole vocabulary the config schema (``config.py``) is written in: ``integer``, ``number``,
``flag``, ``text``, ``choice``, ``choices``, ``optional_path``, nested ``section``s, and ``finish`` to flag
unknown keys.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable, TypeVar

from .errors import ConfigError

ABSENT: Any = object()  # the key is not in the mapping (unlike an explicit null)
REQUIRED: Any = object()  # as a default: the key must be given
# Stands in for a required path that is missing or invalid; never valid (real ones are absolute), and a config
# holding it is always discarded with its problems.
UNSET = Path()
_T = TypeVar("_T")


def show(v: Any) -> str:
    """A value as the user wrote it in YAML (``true``, ``null``), shortened."""
    text = "null" if v is None else ("true" if v else "false") if isinstance(v, bool) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class Section:
    """One mapping of the config: reads typed fields, collects problems, and flags keys nobody read."""

    def __init__(self, data: Any, where: str, problems: list[ConfigError], base_dir: Path, quiet: bool = False):
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
        # Absent takes the default; an explicit null is only "absent" for a required key, else a type error.
        v = self.raw(name)
        if default is REQUIRED and v in (ABSENT, None):
            self.error(name, "required")
            return ABSENT
        return default if v is ABSENT else v

    def _check_range(self, name: str, v: float, gt: float | None, ge: float | None, le: float | None) -> None:
        for ok, rule in ((gt is None or v > gt, f"> {gt}"), (ge is None or v >= ge, f">= {ge}"),
                         (le is None or v <= le, f"<= {le}")):
            if not ok:
                self.error(name, f"must be {rule}, got {show(v)}")
                return

    def integer(self, name: str, default: int, *, ge: int | None = None, le: int | None = None) -> int:
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

    def text(self, name: str, default: str = REQUIRED, pattern: re.Pattern[str] | None = None) -> str:
        v = self._get(name, default)
        if v is ABSENT:
            return ""
        if not isinstance(v, str):
            self.error(name, f"must be a string, got {show(v)}")
        elif not v.strip():
            self.error(name, "must not be empty")
        elif pattern is not None and not pattern.fullmatch(v):  # fullmatch: "$" would accept a trailing newline
            self.error(name, f"must match {pattern.pattern}, got {show(v)}")
        return v if isinstance(v, str) else ""

    def choice(self, name: str, default: Any, options: tuple[Any, ...]) -> Any:
        v = self._get(name, default)
        if type(v) is not type(default) or v not in options:  # type(): True == 1 and 1.0 == 1 in Python
            self.error(name, f"must be one of {', '.join(map(str, options))}, got {show(v)}")
            return default
        return v

    def choices(self, name: str, default: tuple[str, ...], options: tuple[str, ...]) -> tuple[str, ...]:
        """A non-empty list of ``options`` (compared upper-cased), each once, in the order given."""
        v = self._get(name, default)
        if v is default:
            return default
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            self.error(name, f"must be a non-empty list of {', '.join(options)}, got {show(v)}")
            return default
        unknown = [x for x in v if x.upper() not in options]
        if unknown:
            self.error(name, f"must be some of {', '.join(options)}, got {show(unknown)}")
            return default
        return tuple(dict.fromkeys(x.upper() for x in v))

    def optional_path(self, name: str, required: bool = False) -> Path | None:
        v = self.raw(name)
        if v in (ABSENT, None):
            if required:
                self.error(name, "required")
            return None
        if not isinstance(v, str) or not v.strip():
            self.error(name, f"must be a non-empty path, got {show(v)}")
            return None
        try:
            p = Path(v).expanduser()
        except RuntimeError as e:  # ~user that does not exist, or no home directory at all
            self.error(name, f"cannot expand {v!r}: {e}")
            return None
        # normpath, not resolve(): no filesystem access while parsing, and the folders may not exist yet.
        return Path(os.path.normpath(self.base_dir / p))

    def path(self, name: str) -> Path:
        return self.optional_path(name, required=True) or UNSET
