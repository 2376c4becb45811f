"""The folders of one config that must not overlap, judged on the folders they really are on this
machine: symlinks resolved, also along a tail not made yet (``done -> in/done`` before
``in/done``).

``parse_config`` judges the paths as written, without touching the file system; this judges what
they name, so that ``check-config`` and ``run`` refuse a symlinked loop before the first input goes
round. Refused: two sources on one folder, or one inside another's tree watched recursively (each
input taken twice); a folder the daemon writes (``done_dir``, ``failed_dir``, ``output.dir``, ...)
in a watched tree (it would take its own output as input, without end); a watched folder inside one
it writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import AppConfig, CameraSourceConfig, FolderSourceConfig, sorting_root
from ..errors import ConfigError


@dataclass(frozen=True)
class _Folder:
    key: str  # its key path: "sources[0].path"
    path: Path  # as configured
    real: Path  # what it names now
    tree: bool  # its sub-folders belong to it too (watched recursively; anything written)


def _folder(key: str, path: Path, tree: bool = True) -> _Folder:
    # realpath, not Path.resolve: what exists resolved, the rest kept, dangling links followed.
    return _Folder(key, path, Path(os.path.realpath(path)), tree)


def _watched(config: AppConfig) -> list[tuple[str, _Folder]]:
    return [(s.name, _folder(f"sources[{i}].path", s.path, s.recursive))
            for i, s in enumerate(config.sources) if isinstance(s, FolderSourceConfig)]


def _written(config: AppConfig) -> list[_Folder]:
    out = [_folder("output.dir", config.output.dir)]
    mqtt = config.output.mqtt
    if mqtt is not None and mqtt.spool_dir is not None:
        out.append(_folder("output.mqtt.spool_dir", mqtt.spool_dir))
    for i, s in enumerate(config.sources):
        if isinstance(s, FolderSourceConfig):
            if s.after == "move" and s.done_dir is not None:  # otherwise done_dir is never used
                out.append(_folder(f"sources[{i}].done_dir", sorting_root(s.done_dir)))
            out.append(_folder(f"sources[{i}].failed_dir", s.failed_dir))
        elif isinstance(s, CameraSourceConfig) and s.samples_dir is not None:
            out.append(_folder(f"sources[{i}].samples_dir", s.samples_dir))
    return out


def _within(inner: Path, outer: _Folder) -> bool:
    return inner == outer.real or (outer.tree and inner.is_relative_to(outer.real))


def _named(f: _Folder) -> str:
    """The folder as written, and what it resolves to when a symlink makes that another folder."""
    return str(f.path) if f.real == f.path else f"{f.path}, which resolves to {f.real},"


def folder_overlaps(config: AppConfig) -> list[ConfigError]:
    """Every overlap among the config's folders, each naming the key to change and the other."""
    problems: list[ConfigError] = []
    watched = _watched(config)
    for j, (_, b) in enumerate(watched):
        for _, a in watched[:j]:
            if a.real == b.real:
                problems.append(ConfigError(b.key, f"{_named(b)} is the folder of {a.key} "
                                                   f"({a.real}): two sources would take each input "
                                                   "twice"))
            elif _within(b.real, a) or _within(a.real, b):
                outer, inner = (a, b) if _within(b.real, a) else (b, a)
                problems.append(ConfigError(b.key, f"{_named(b)} overlaps {a.key}: {inner.real} is "
                                                   f"inside {outer.real}, watched recursively: two "
                                                   "sources would take its inputs twice"))
    for out in _written(config):
        for name, src in watched:
            if _within(out.real, src):
                how = "is the folder" if out.real == src.real else "is inside the folder"
                tree = "" if out.real == src.real else ", which is watched recursively"
                problems.append(ConfigError(out.key, f"{_named(out)} {how} of source {name!r} "
                                                     f"({src.key}: {src.real}){tree}: the daemon "
                                                     "would take its own output as input, without "
                                                     "end"))
            elif src.real.is_relative_to(out.real):
                problems.append(ConfigError(src.key, f"{_named(src)} is inside {out.key} "
                                                     f"({out.real}), which the daemon writes into: "
                                                     "its own output would come back as input"))
    return problems
