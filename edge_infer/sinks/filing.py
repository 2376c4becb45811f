"""Where a folder input and its record are filed: under the contract's names when they are free, never over
something else.

Cameras and scanners restart their counters, so the same name comes back with other bytes. Then the
newcomer is filed under its name with a suffix before the extension (viewers still open it), taken from its
own bytes: ``IMG_0001.JPG`` -> ``IMG_0001~1a2b3c4d.JPG`` (8 hex digits of its sha256), its result
``IMG_0001~1a2b3c4d.JPG.json``; its record's ``stored_as`` says so, ``input`` keeps the name it came under.
The one name chosen serves its record and its input alike (``done/X`` and ``X.json`` stay a pair). As the
suffix comes from the bytes, a restart after a crash between the record and the move finds the same name
again and the input is a ``duplicate``, not a third copy. A suffixed name itself taken by other bytes (a
prefix collision, or someone else's file) gives way to 16, then all 64 digits, then ``<64 digits>-2``,
``-3``... An input whose bytes were never read (too large, not a regular file, quarantined) has no digest:
it takes ``~2``, ``~3``...

In the failed folder records and inputs lie side by side, so a name ending in ``.error.json`` is
a record's there, never an input's: a failed input of such a name (a failure record moved back into
the inbox with its input, to retry them) is filed suffixed, ``scan.jpg.error~1a2b3c4d.json``.
Otherwise the retried input's next record would take the path where that file lies.
"""
from __future__ import annotations

import errno
import filecmp
import itertools
import logging
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterator

from .durable import ERROR_SUFFIX, NAME_MAX, error_path, move_file, read_json, result_path
from .name_cut import cut_name

log = logging.getLogger(__name__)
UNSURE = "unsure"  # the class folder of inputs whose top-1 score is below the source's min_score
TAG_DIGITS = (8, 16, 64)
MAX_COUNTER = 99
MAX_EXT = 10  # a longer "extension" is part of the name (``report.final-version``), the tag goes at the end


def label_folder(label: str) -> str:
    """A label as one safe folder name: ``/``, ``\\``, NUL and other control characters become ``_``, so do
    leading dots (no ``..``, no hidden folder), an empty label is ``_``, and it is cut to a file name's length.
    Labels come from the model's manifest, yet the manifest is a file anyone may have written."""
    name = "".join("_" if c in "/\\" or ord(c) < 32 or ord(c) == 127 else c for c in label)
    stripped = name.lstrip(".")
    name = "_" * (len(name) - len(stripped)) + stripped or "_"
    # Cut on a character boundary; a lone surrogate (JSON allows them) cannot be a UTF-8 name and becomes "?".
    return name.encode("utf-8", "replace")[:NAME_MAX].decode("utf-8", "ignore") or "_"


def sorted_dir(done_dir: Path, label: str) -> Path:
    """``done_dir`` with its ``{label}`` filled in (one folder per class), or as it is without one."""
    text = str(done_dir)
    return Path(text.format(label=label_folder(label))) if "{label}" in text else done_dir


def suffixed(rel: str, tag: str) -> str:
    """``rel`` with ``~tag`` before its extension; a long name is cut so that the result fits a file name."""
    head, sep, name = rel.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not stem or len(ext) > MAX_EXT:
        stem, dot, ext = name, "", ""
    tail = f"~{tag}{dot}{ext}"
    return f"{head}{sep}{cut_name(stem, NAME_MAX - len(os.fsencode(tail)))}{tail}"


def names(rel: str, digest: str | None) -> Iterator[str]:
    """The names an input may be filed under, in the order they are tried."""
    yield rel
    if digest:
        for n in TAG_DIGITS:
            yield suffixed(rel, digest[:n])
    for k in range(2, MAX_COUNTER + 1):
        yield suffixed(rel, f"{digest}-{k}" if digest else str(k))


def _records(rel: str, digest: str | None, path_of: Callable[[str], Path]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The records on disk along ``rel``'s names: ``rel`` and its first suffixed name are always looked at
    (the plain one may have been cleaned up since), then as long as the names are taken."""
    for i, name in enumerate(names(rel, digest)):
        path = path_of(name)
        record = read_json(path)
        if record is not None:
            yield name, record
        elif i >= 1 and not os.path.lexists(path):
            return


def _same_bytes(record: dict[str, Any], rel: str, digest: str | None) -> bool:
    return digest is not None and record.get("input") == rel and record.get("input_sha256") == digest


def find_result(output_dir: Path, source: str, rel: str, digest: str) -> str | None:
    """The name an ``ok`` result for these very bytes of ``rel`` is filed under, if there is one."""
    for name, record in _records(rel, digest, lambda n: result_path(output_dir, source, n)):
        if record.get("status") == "ok" and _same_bytes(record, rel, digest):
            return name
    return None


def same_content(a: Path, b: Path) -> bool:
    """Two entries with the same bytes (two links to the same target)."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
        if stat.S_ISLNK(sa.st_mode) and stat.S_ISLNK(sb.st_mode):
            return os.readlink(a) == os.readlink(b)
        if not (stat.S_ISREG(sa.st_mode) and stat.S_ISREG(sb.st_mode)) or sa.st_size != sb.st_size:
            return False
        return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def choose(rel: str, digest: str | None, record_at: Callable[[str], Path], src: Path | None,
           dest_dir: Path | None, kind: str | None = None, taken: set[Path] | None = None) -> str:
    """The first of ``rel``'s names whose record path is free (or holds a record of these very bytes) and,
    when the input is to be moved into ``dest_dir``, whose path there is free or holds the same bytes.
    A record found there is this input's from an earlier attempt: the caller keeps it as it is.

    ``kind``: a failure's error kind (``dest_dir`` is the failed folder: no ``.error.json`` name).
    A failure of bytes never read (no digest) reuses a record of the same name and kind whose input
    never reached ``dest_dir``: its own record from an interrupted attempt. ``taken``: the record
    and input paths chosen for the other inputs of a group commit, not yet on disk (two inputs of
    one name in one group); this input's are added.
    """
    moving = dest_dir is not None and src is not None and os.path.lexists(src)
    taken = taken if taken is not None else set()
    for name in names(rel, digest):
        path, dest = record_at(name), dest_dir / name if dest_dir is not None else None
        if (kind is not None and name.endswith(ERROR_SUFFIX)) or path in taken or dest in taken:
            continue
        if os.path.lexists(path):
            record = read_json(path) or {}
            if not (_same_bytes(record, rel, digest) or (
                    digest is None and kind is not None and record.get("input") == rel
                    and (record.get("error") or {}).get("kind") == kind
                    and dest is not None and not os.path.lexists(dest))):
                continue
        if moving and os.path.lexists(dest) and not same_content(src, dest):  # type: ignore[arg-type]
            continue
        taken.update(p for p in (path, dest) if p is not None)
        return name
    raise FileExistsError(errno.EEXIST, f"all {MAX_COUNTER + 3} names for it are taken", str(record_at(rel)))


def file_input(src: Path, dest_dir: Path, stored_as: str, rel: str, digest: str | None) -> Path:
    """Move ``src`` to ``dest_dir/stored_as`` without replacing anything: where those very bytes are already
    (a restart after a crash between the move and the next step), the newcomer is dropped; a name taken by
    other bytes since it was chosen (something else writing into ``dest_dir``) gives way to the next
    one (never to a record's name: see the module's note)."""
    # Lazily: the chain holds ~100 names and all but the first are needed only after a clash (building them
    # all for every move cost ~0.5 ms of CPU per input).
    others = (n for n in names(rel, digest) if n != stored_as and not n.endswith(ERROR_SUFFIX))
    for name in itertools.chain([stored_as], others):
        dest = dest_dir / name
        try:
            move_file(src, dest)
        except FileExistsError:
            if same_content(src, dest):
                src.unlink()
                return dest
            continue
        if name != stored_as:
            log.warning("%s appeared while %r was filed: the input went to %s instead (its record says %s)",
                        dest_dir / stored_as, rel, dest, stored_as)
        return dest
    raise FileExistsError(errno.EEXIST, f"all {MAX_COUNTER + 3} names for it are taken", str(dest_dir / rel))


def drop_interrupted_failure(failed_dir: Path, rel: str, digest: str) -> None:
    """Before an ``ok`` result counts: a failure record of this input from an interrupted earlier attempt
    (written, the input never moved to ``failed_dir``: a decoder crash or timeout, then a restart) would be
    a second record. Failure records of other inputs of the same name, or complete ones, are kept."""
    for chain in (digest, None):
        for name, record in _records(rel, chain, lambda n: error_path(failed_dir, n)):
            interrupted = not os.path.lexists(failed_dir / name) and record.get("input") == rel and (
                record.get("input_sha256") == digest
                or (record.get("input_sha256") is None and (record.get("error") or {}).get("kind") in ("crashed", "timeout")))
            if interrupted:
                error_path(failed_dir, name).unlink(missing_ok=True)
