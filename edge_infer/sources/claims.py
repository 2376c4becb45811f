"""Inputs claimed by identity: a folder input is taken by renaming it into the source's own hidden folder.

From the moment the daemon takes an input until it is acknowledged, it works on that file, never on whatever
the inbox path names later. maildir's readers do the same (a message is claimed by renaming it from ``new/``
into ``cur/``), and so does Postfix's queue (files named by inode). The claim is one rename within the inbox's
file system into ``<inbox>/.edge-infer/claimed/``, under a name made of the file's inode and its path in the
inbox (so the name it is filed under survives a restart):

- a producer that renames a newer ``latest.jpg`` over the path while the older one is in flight replaces
  nothing of ours: the newer file is a new input, with its own record;
- a folder renamed with inputs in flight: the claimed ones keep the name they were taken under, and the
  others are seen under the folder's new name (a claim of a name that is gone takes nothing);
- a restart after a crash or a power cut finds the claims in that folder and finishes them (a claim whose
  rename did not survive the cut is simply an input in the inbox again).

The rename is not synced on its own: the acknowledgement's folder syncs make it durable with the move out.
Inputs that cannot be renamed are processed where they are, as before claims: an input under ``after:
keep`` (it never moves), one whose folder refuses the rename (a read-only or immutable input, a sub-folder on
another file system, a name too long to encode), and non-regular files (refused with a failure record). Their
acknowledgement checks, just before it, that the path still names the file that was read.
"""
from __future__ import annotations

import logging
import os
import re
import stat
import time
from pathlib import Path

from ..sinks.durable import NAME_MAX, make_dirs, rename_noreplace

log = logging.getLogger(__name__)
OWN_DIR = ".edge-infer"  # the daemon's own folder in each inbox (hidden: never an input)
CLAIMED = "claimed"
_ESCAPED = re.compile("%(25|2F)")
# A file written in place is claimed once its inode has been still this long: producers act on it by path
# right after closing it (GNU mv across file systems copies its attributes, Python's shutil.copy its mode)
# and would find it gone. Renamed-in files are finished and claimed at once.
QUIET_S = 0.05
RELEASE_S = 0.5  # idle this long, the claim folder goes (an inbox at rest holds only people's files)


def encode(ino: int, rel: str) -> str:
    """The claimed name of the input with inode ``ino`` at ``rel``: ``<ino>-<rel>``, ``%`` and ``/`` escaped."""
    return f"{ino}-" + rel.replace("%", "%25").replace("/", "%2F")


def decode(name: str) -> str | None:
    """The inbox path a claimed name was taken from (None: not one of ours)."""
    ino, sep, rel = name.partition("-")
    if not (sep and ino.isdigit() and rel):
        return None
    return _ESCAPED.sub(lambda m: "%" if m.group(1) == "25" else "/", rel)


class Claims:
    """One folder source's claims; used by its one dispatching thread at a time."""

    def __init__(self, inbox: Path) -> None:
        self.folder = inbox / OWN_DIR / CLAIMED
        self._refused: set[int] = set()  # errnos already logged: one line per kind of refusal, not per input
        self._busy_at: float | None = time.monotonic()  # last told it had inputs; None: released

    def prepare(self) -> None:
        """The claim folder, durably (a claim into a folder that a power cut takes back would lose it)."""
        make_dirs(self.folder)

    def idle(self, busy: bool) -> None:
        """Told at each turn of the source's loop whether it has inputs; idle for RELEASE_S, it releases."""
        now = time.monotonic()
        if busy:
            self._busy_at = now
        elif self._busy_at is not None and now - self._busy_at >= RELEASE_S:
            self._busy_at = None
            self.release()

    def release(self) -> None:
        """The claim folder and the daemon's own folder removed while nothing is claimed, so that an idle
        inbox holds only what people put there (made again, durably, at the next claim)."""
        for folder in (self.folder, self.folder.parent):
            try:
                folder.rmdir()
            except OSError:
                return  # something is still claimed (a parked input), or it is gone already

    @staticmethod
    def wait_for_quiet(path: str, quiet_s: float) -> float:
        """Seconds until ``path``'s inode has been unchanged (its ctime) for ``quiet_s``; 0: claim it now."""
        try:
            changed = os.lstat(path).st_ctime_ns / 1e9
        except OSError:
            return 0.0  # gone, or unreadable: the claim says which
        return max(0.0, min(quiet_s, changed + quiet_s - time.time()))

    def claim(self, path: str, rel: str, again: bool = True) -> str | None:
        """The path to work on: the claimed one, ``path`` itself when it cannot be claimed (processed in
        place), or None when nothing is there any more (replaced by nothing, or its folder renamed: its new
        name has an event or a scan of its own)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError:
            return path  # the worker's open reports what is wrong with it
        name = encode(st.st_ino, rel)
        if not stat.S_ISREG(st.st_mode) or len(os.fsencode(name)) > NAME_MAX:
            return path
        dest = self.folder / name
        try:
            rename_noreplace(Path(path), dest)
        except FileNotFoundError:
            if self.folder.is_dir() or not os.path.lexists(path):
                return None
            if again:  # the inbox came back without our folder (deleted and made again): make it anew
                try:
                    self.prepare()
                except OSError as e:
                    self._refused_once(e.errno or 0, path, f"cannot make {self.folder}: {e.strerror or e}")
                    return path
                return self.claim(path, rel, again=False)
            return path
        except FileExistsError:
            # The same inode under the same name in flight already: a second event for one file.
            return None
        except OSError as e:
            self._refused_once(e.errno or 0, path, e.strerror or str(e))
            return path
        return str(dest)

    def _refused_once(self, err: int, path: str, why: str) -> None:
        if err not in self._refused:
            self._refused.add(err)
            log.warning("cannot claim %s (%s): inputs like it are processed in place, their path checked "
                        "again just before they are acknowledged", path, why)

    def left(self) -> list[tuple[str, str]]:
        """(claimed path, inbox path) of each claim an earlier run left unacknowledged, oldest first."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            rel = decode(entry.name)
            if rel is None or entry.is_dir(follow_symlinks=False):
                log.warning("%s is not a claim of ours; left alone", entry.path)
                continue
            found.append((entry.stat(follow_symlinks=False).st_ctime_ns, entry.path, rel))
        return [(p, rel) for _, p, rel in sorted(found)]

