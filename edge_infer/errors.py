"""The typed errors of edge-infer. ``cli.py`` maps them to exit codes; stages catch them at their
boundary."""
from __future__ import annotations

import errno

# A config's values are echoed in messages; these bound what one message may carry, so that no value
# (a 200 KB string, a key as long as the file) is ever printed whole.
MAX_KEY_CHARS = 200
MAX_MESSAGE_CHARS = 500
MAX_LISTED = 20  # problems printed for one file; the rest are counted


def cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and how many more were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (cut: {len(text) - limit} characters)"


class EdgeInferError(Exception):
    """Base class: an expected failure with a message fit for a user (no traceback needed)."""


class ConfigError(EdgeInferError):
    """A bad setting; ``key`` is its dotted path (``sources[1].fps``). Both are cut to a bound."""

    def __init__(self, key: str, message: str) -> None:
        key, message = cut(key, MAX_KEY_CHARS), cut(message, MAX_MESSAGE_CHARS)
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class ModelError(EdgeInferError):
    """The model or its manifest is missing, unreadable or inconsistent."""


class InputError(EdgeInferError):
    """One input could not be processed; ``kind`` is the result JSON's ``error.kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class ResourceError(EdgeInferError):
    """The machine is short of descriptors or memory for now (``errno`` in
    ``TRANSIENT_ERRNOS``): the work waits and is retried with backoff, never failed."""


# Errors that pass by themselves: out of descriptors (this process's or the system's), memory,
# buffers.
TRANSIENT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN,
                              errno.ENOBUFS})


class ExportError(EdgeInferError):
    """The export could not run: bad weights, no calibration images, an unwritable output."""


class VerificationError(ExportError):
    """The exported int8 model disagrees with fp32 more than the threshold allows."""


class InvalidConfig(EdgeInferError):
    """Every problem found in one config file, each a ``ConfigError`` naming its key path; the
    message lists the first ``MAX_LISTED`` and counts the rest."""

    def __init__(self, path: str, problems: list[ConfigError]) -> None:
        lines = "\n".join(f"  {p}" for p in problems[:MAX_LISTED])
        if len(problems) > MAX_LISTED:
            lines += f"\n  ... and {len(problems) - MAX_LISTED} more not listed"
        super().__init__(f"{path}: {len(problems)} problem(s)\n{lines}")
        self.path = path
        self.problems = problems


class SandboxError(EdgeInferError):
    """A decoder child's sandbox step did not take effect; ``steps`` names them, the message is the
    report."""

    def __init__(self, steps: tuple[str, ...], summary: str) -> None:
        super().__init__(f"sandbox incomplete ({', '.join(steps)}): {summary}")
        self.steps = steps
