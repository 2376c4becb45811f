"""Whose is a file-system error: one input's, the store's, or nobody's for long.

A commit (the input's record, then its acknowledgement) can fail because of that input alone (its name, its
sub-folder's owner, an immutable flag, a file standing where its folder must go), because of the store (the
disk full or read-only, an output folder gone or not ours), or because the machine is short of descriptors
or memory for a moment. An error is the input's own until proven global: an errno that can be either is the
store's only when one of the store's roots fails the probe (``store_problem``), and then the probe's error,
which names the root, is the one reported.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable

from ..errors import TRANSIENT_ERRNOS as TRANSIENT
from ..sinks.durable import make_dirs
from ..sinks.spool import SpoolFull

# One input's, when the store's roots pass the probe. Anything else (ENOSPC, EDQUOT, EROFS, EIO, a root
# gone) is the store's, as is any errno not named here: holding inputs is the safe side of a doubt.
PER_INPUT = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG,
                       errno.ELOOP})
_ACCESS = {"effective_ids": True} if os.access in os.supports_effective_ids else {}


def describe(e: OSError) -> str:
    """``EACCES (Permission denied): '/a' -> '/b'``: what a record or a log line says of an error."""
    text = f"{errno.errorcode.get(e.errno or 0, str(e.errno))} ({e.strerror or e})"
    names = [repr(os.fsdecode(f)) for f in (e.filename, e.filename2) if f is not None]
    return f"{text}: {' -> '.join(names)}" if names else text


def blocked_kind(e: OSError) -> str:
    """The ``edge_infer_output_blocked`` reason for a write that failed."""
    if isinstance(e, SpoolFull):
        return "spool_full"
    if e.errno in TRANSIENT:
        return "resources"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "enospc"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "readonly"
    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EEXIST):
        return "missing"  # EEXIST: a file stands where a root folder must be
    return "io"


def store_problem(roots: Iterable[Path]) -> OSError | None:
    """Why the store cannot take writes under these roots (each made if it is missing, as a write would),
    or None: they exist as folders we may write to."""
    for root in roots:
        try:
            make_dirs(root)
            if not os.access(root, os.W_OK | os.X_OK, **_ACCESS):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(root))
        except OSError as e:
            return e
    return None


def raise_unless_own(e: OSError, roots: Iterable[Path]) -> None:
    """Return when ``e`` belongs to the input alone; raise the store's error (or ``e``, when it is
    transient or the store's by its errno) otherwise. Call it inside the ``except`` that caught ``e``."""
    if isinstance(e, SpoolFull) or e.errno not in PER_INPUT:
        raise e
    problem = store_problem(roots)
    if problem is not None:
        raise problem from e
