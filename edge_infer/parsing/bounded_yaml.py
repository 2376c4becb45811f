"""YAML read within bounds: a config costs what a small file costs, whatever it holds.

A real config is a few KB (the shipped device example, comments and all, is 2.5 KB). PyYAML's
pure-Python loader costs ~75 bytes of memory and ~3 us of CPU per byte read (10 MB of keys took
768 MB and 33 s here). Aliases are shared, not copied: their cost comes later, in whatever walks the
value (a message that echoes it). So at most ``MAX_BYTES`` are read; the document with every alias
expanded may be no larger than such a file (``MAX_BYTES`` characters of scalars, plus one per node);
it nests at most ``MAX_DEPTH`` levels; a number is at most ``MAX_NUMBER_CHARS`` long. A refusal
names its key.
"""
from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import ConfigError, InvalidConfig, cut

MAX_BYTES = 128 * 1024  # 50x the shipped example; parsing this much costs ~13 MB and under a second
MAX_DEPTH = 32  # the deepest real key (sources[].regions[].model.path) is 6 levels down
MAX_NUMBER_CHARS = 32  # the largest setting fits in 20 digits; Python will not print beyond 4300
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
# One step of a key path: a mapping's key node, a sequence index, or None for a key itself.
_Step = Union[Node, int, None]
# Linked from the leaf to the root (cheap to extend), formatted only when a problem is found.
_Path = Optional[tuple[Any, _Step]]


class Refused(yaml.YAMLError):
    """The document passes a bound, or YAML cannot construct a value; ``key`` says where."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


def key_path(path: _Path) -> str:
    """``sources[1].fps`` from a linked path; ``<root>`` for the document itself."""
    steps: list[_Step] = []
    while path is not None:
        path, step = path
        steps.append(step)
    out = ""
    for step in reversed(steps):
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            name = cut(str(step.value), 40) if isinstance(step, ScalarNode) else "(a key)"
            out += f".{name}" if out else name
    return out or "<root>"


def _children(node: Node) -> list[tuple[_Step, Node]]:
    if isinstance(node, SequenceNode):
        return list(enumerate(node.value))
    if isinstance(node, MappingNode):
        return [step for k, v in node.value for step in ((None, k), (k, v))]
    return []


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader within the bounds above; refuses duplicate keys (PyYAML keeps the last one)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._composing: list[_Step] = []  # the composer recurses: its depth is checked as it goes
        self._where: dict[int, _Path] = {}  # node id -> where first met (the constructor's errors)

    def compose_node(self, parent: Optional[Node], index: Any) -> Node:
        self._composing.append(index if isinstance(index, (int, Node)) else None)
        try:
            if len(self._composing) > MAX_DEPTH + 1:  # + 1: the document itself
                path: _Path = None
                for step in self._composing[1:]:
                    path = (path, step)
                raise Refused(key_path(path), f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._composing.pop()

    def compose_document(self) -> Node:
        node = super().compose_document()
        self._measure(node, None, 0, {}, set())
        return node

    def _measure(self, node: Node, path: _Path, depth: int, sizes: dict[int, tuple[int, int]],
                 open_: set[int]) -> tuple[int, int]:
        """The node's (characters, height) with every alias expanded; memoised: each node is walked
        once, and the recursion is at most ``MAX_DEPTH`` deep."""
        too_deep = f"nested deeper than {MAX_DEPTH} levels (through aliases)"
        if depth > MAX_DEPTH:
            raise Refused(key_path(path), too_deep)
        ident = id(node)
        if ident in open_:
            raise Refused(key_path(path), "an alias (*) names a collection that holds it: a loop")
        if ident not in sizes:
            self._where.setdefault(ident, path)
            open_.add(ident)
            size, height = self._scalar(node, path) if isinstance(node, ScalarNode) else (1, 1)
            for step, child in _children(node):
                more, below = self._measure(child, (path, step), depth + 1, sizes, open_)
                size, height = size + more, max(height, below + 1)
                if size > MAX_BYTES:  # at the document itself, the key that took it over is named
                    raise Refused(key_path(path or (path, step)),
                                  f"with its aliases (*) expanded, the config passes {MAX_BYTES} "
                                  "characters here, the most it may hold")
            open_.discard(ident)
            sizes[ident] = (size, height)
        size, height = sizes[ident]
        if depth + height - 1 > MAX_DEPTH:
            raise Refused(key_path(path), too_deep)
        return size, height

    @staticmethod
    def _scalar(node: ScalarNode, path: _Path) -> tuple[int, int]:
        if node.tag in (_INT, _FLOAT) and len(node.value) > MAX_NUMBER_CHARS:
            raise Refused(key_path(path), f"a number of {len(node.value)} characters: at most "
                          f"{MAX_NUMBER_CHARS} (no setting needs more)")
        return 1 + len(node.value), 1

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, LookupError, AttributeError, TypeError, ArithmeticError) as e:
            # PyYAML's constructors let these escape (2001-13-45, !!int abc, !!bool maybe).
            value = cut(repr(node.value), 60) if isinstance(node, ScalarNode) else node.id
            raise Refused(key_path(self._where.get(id(node))),
                          f"YAML cannot read {value} as {node.tag.rsplit(':', 1)[-1]}: "
                          f"{cut(str(e) or type(e).__name__, 120)}") from e

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # overriding a merged (<<) key is fine
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # super() reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {cut(repr(key), 60)}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read(file: Path) -> str:
    with open(file, "rb") as f:
        data = f.read(MAX_BYTES + 1)  # never more, whatever the file is (/dev/zero, a FIFO)
        if len(data) > MAX_BYTES:
            size = os.fstat(f.fileno()).st_size
            what = f"{size} bytes" if size > MAX_BYTES else "longer"
            raise ValueError(f"is {what}: a config may hold at most {MAX_BYTES} bytes (a real one "
                             "is a few KB); refused unparsed")
    return data.decode("utf-8-sig")  # -sig: tolerate the BOM some Windows editors write


def load_yaml(path: str | Path) -> tuple[Any, Path]:
    """A YAML file's document and its absolute path; ``InvalidConfig`` if it cannot be read or
    parsed within the bounds, naming the key where one is passed (else ``<file>``)."""
    def fail(message: str, key: str = "<file>") -> InvalidConfig:
        return InvalidConfig(str(path), [ConfigError(key, message)])

    try:
        file = Path(os.path.abspath(Path(path).expanduser()))
        text = _read(file)
    except (OSError, RuntimeError) as e:
        raise fail(f"cannot read: {getattr(e, 'strerror', None) or e}") from e
    except UnicodeDecodeError as e:
        raise fail(f"not UTF-8 text: {e}") from e
    except ValueError as e:
        raise fail(str(e)) from e
    try:
        return yaml.load(text, Loader=BoundedLoader), file
    except Refused as e:
        raise fail(e.message, e.key) from e
    except yaml.YAMLError as e:
        raise fail(f"invalid YAML: {e}") from e
