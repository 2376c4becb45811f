"""Samples for the next training: crops of a camera region, filed by the state they were classified as.

``<samples_dir>/<region>/<predicted state>/<UTC time>-<seq>-<why>.jpg`` is the folder-per-class layout
``edge-infer train`` reads: moving the wrong ones into the right folders and training again is the whole
improvement loop. ``why`` is ``first`` (the region's first frame this run), ``start`` (a frame that began a
run towards a new state), ``confirm`` (the frame that confirmed one) or ``unsure`` (a score below
``sample_below``).

Bounded per region: at most ``samples_per_hour`` kept in any hour, ``unsure`` ones at least an hour /
``samples_per_hour`` apart (a scene the model is unsure of for hours must not spend the hour's allowance in
its first seconds, leaving nothing for the changes that follow), and at most ``samples_max_files`` files and
``samples_max_bytes`` bytes under ``<samples_dir>/<region>/``, the oldest (by modification time, which a move
keeps) removed first. The folder is counted afresh after each sample, so files the user moved or deleted
are never miscounted. Samples are a convenience, not results: written whole (a temporary name, then a
rename) but not fsynced, and a sample that cannot be written is logged and skipped, never an error of the
frame or the daemon.
"""
from __future__ import annotations

import collections
import io
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
JPEG_QUALITY = 90
HOUR_S = 3600.0
REASONS = ("first", "start", "confirm", "unsure")


def _folder_name(state: str) -> str:
    # A label is the model's text: keep it a single, visible folder name.
    name = re.sub(r"[/\x00]", "_", state).strip()
    return "_" + name if name.startswith(".") or not name else name


class SampleStore:
    """One camera's samples (see the module docstring)."""

    def __init__(self, root: Path, *, max_files: int, max_bytes: int, per_hour: dict[str, int],
                 clock: Any = time.monotonic) -> None:
        self.root, self._max_files, self._max_bytes = root, max_files, max_bytes
        self._per_hour = per_hour  # region -> samples_per_hour
        self._kept: dict[str, collections.deque[float]] = {r: collections.deque() for r in per_hour}
        self._unsure_at: dict[str, float] = {}  # region -> when its last unsure sample was kept
        self._clock = clock
        self._failing = False  # a write failed: logged once until one succeeds again
        self.saved = 0

    def keep(self, region: str, state: str, image: Any, seq: int, why: str) -> Path | None:
        """Save ``image`` (a PIL image of the region's crop) unless the hour's allowance is spent."""
        if why not in REASONS:
            raise ValueError(f"why must be one of {REASONS}, not {why!r}")
        now = self._clock()
        kept = self._kept[region]
        while kept and kept[0] <= now - HOUR_S:
            kept.popleft()
        if len(kept) >= self._per_hour[region]:
            return None
        last = self._unsure_at.get(region)
        if why == "unsure" and last is not None and now - last < HOUR_S / self._per_hour[region]:
            return None
        stamp = time.time()
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(stamp)) + f"{int(stamp * 1000) % 1000:03d}Z-{seq:06d}-{why}.jpg"
        folder = self.root / region / _folder_name(state)
        try:
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=JPEG_QUALITY)
            data = buf.getvalue()
            if len(data) > self._max_bytes:
                return None
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{name}.tmp"  # hidden, and not an image name: train never reads one half-written
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, folder / name)
            self._bound(self.root / region)
        except OSError as e:
            if not self._failing:
                log.warning("camera samples: cannot keep a sample under %s: %s", folder, e.strerror or e)
            self._failing = True
            return None
        self._failing = False
        kept.append(now)
        if why == "unsure":
            self._unsure_at[region] = now
        self.saved += 1
        return folder / name

    def _bound(self, region_dir: Path) -> None:
        """Remove the oldest files under ``region_dir`` until it holds at most the bounds."""
        files: list[tuple[float, str, int]] = []
        for sub in os.scandir(region_dir):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for entry in os.scandir(sub.path):
                if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):
                    st = entry.stat(follow_symlinks=False)
                    files.append((st.st_mtime, entry.path, st.st_size))
        files.sort()
        count, total = len(files), sum(size for _, _, size in files)
        for _, path, size in files:
            if count <= self._max_files and total <= self._max_bytes:
                break
            try:
                os.unlink(path)
            except FileNotFoundError:  # the user moved or deleted it meanwhile
                pass
            count, total = count - 1, total - size
