"""The schema of a watched folder source, and the checks between its folders."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from ..config_reader import ABSENT, REQUIRED, Section, parsed, read, setting
from .source_config import BaseSourceConfig

# In a folder source's done_dir: one folder per top-1 label (sinks/filing.sorted_dir).
LABEL_FIELD = "{label}"


@dataclass(frozen=True)
class FolderSourceConfig(BaseSourceConfig):
    """A watched folder. ``polling`` is for network mounts without inotify."""
    path: Path = setting(REQUIRED, "the watched folder")
    done_dir: Optional[Path] = setting(
        REQUIRED, "where processed inputs go; required for after: move; {label}: the top-1 label "
                  "(a folder per class)", placeholders=("label",))
    failed_dir: Path = setting(REQUIRED, "where failed inputs go, each with its error record")
    type: Literal["folder"] = setting("folder", "the source type")
    after: Literal["move", "delete", "keep"] = setting(
        "move", "what becomes of an input once its result is durable")
    recursive: bool = setting(True, "watch sub-folders too")
    polling: bool = setting(False, "poll instead of inotify (network mounts)")
    poll_interval_s: float = setting(1.0, "polling period", gt=0)
    settle_s: float = setting(
        0.5, "polling: a file is complete once its size and mtime hold still this long", ge=0)
    rescan_interval_s: float = setting(60.0, "period of the reconciliation scan (finds what events "
                                             "missed)", gt=0)
    min_score: float = setting(0.0, "with {label} in done_dir: a top-1 score below this files the "
                                    "input under unsure", ge=0, le=1)


def sorting_root(done_dir: Path) -> Path:
    """The folder that holds a ``{label}`` done_dir's class folders (``done_dir`` itself without
    one)."""
    while LABEL_FIELD in str(done_dir):
        done_dir = done_dir.parent
    return done_dir


def parse_folder(s: Section, name: str) -> FolderSourceConfig:
    src = read(s, FolderSourceConfig, name=lambda _: name)
    path, failed = src.path, src.failed_dir
    sorts = src.done_dir is not None and LABEL_FIELD in str(src.done_dir)
    done = (sorting_root(src.done_dir) if parsed(src.done_dir) and src.done_dir is not None
            else src.done_dir)
    if src.after == "move" and s.raw("done_dir") in (ABSENT, None):
        s.error("done_dir", "required")
    if sorts and src.after != "move":
        s.error("done_dir", f"{LABEL_FIELD} sorts the inputs moved there: it needs after: move, "
                            f"not {src.after}")
    if src.min_score > 0 and not sorts:
        s.error("min_score", f"only sorts inputs into unsure with {LABEL_FIELD} in done_dir")
    if sorts and src.after == "move" and parsed(done, failed) and failed.is_relative_to(done):
        s.error("failed_dir", f"must not be inside {done}, which holds done_dir's class folders: a "
                              "class of that name would share it")
    # done_dir only matters when files are moved there.
    for key, d in (("done_dir", done if src.after == "move" else None), ("failed_dir", failed)):
        if not parsed(d, path):
            continue
        if d == path:
            s.error(key, f"must not be the same folder as path ({path})")
        elif src.recursive and d.is_relative_to(path):
            s.error(key, f"must not be inside path ({path}) when recursive: it would re-process "
                         "its own output")
    if src.after == "move" and not sorts and parsed(done, failed) and failed == done:
        s.error("failed_dir", f"must not be the same folder as done_dir ({done})")
    return src
