"""File names shortened to fit a byte limit (``NAME_MAX``: 255 bytes), cut between characters."""
from __future__ import annotations

import os


def cut_name(name: str, limit: int) -> str:
    """The longest start of ``name`` that takes at most ``limit`` bytes on disk, ending on a
    character boundary. Cut in bytes, a UTF-8 character split in two leaves bytes that are no
    character at all: the file's name would not be UTF-8 any more, nor the record's ``stored_as``
    (``\\udcXX`` escapes). A name that was not UTF-8 to begin with keeps its undecodable bytes
    (Python holds each as one character)."""
    size = 0
    for i, char in enumerate(name):
        size += len(os.fsencode(char))
        if size > limit:
            return name[:i]
    return name
