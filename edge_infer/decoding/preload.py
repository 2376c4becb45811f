"""What the decoders' forkserver imports once, before it forks any decoder: the decoding code, every Pillow
plugin (Pillow imports them lazily, and a sandboxed decoder can open no file to import one), and the seccomp
binding (whose import runs ldconfig). Each decoder then starts in milliseconds and shares these pages with
its siblings, which is most of a decoder's memory.

The one module whose import does work: importing it is its whole purpose, and only the forkserver does.
"""
from __future__ import annotations

from PIL import Image

from . import child  # noqa: F401 - loaded for the decoders

Image.init()
try:
    import pyseccomp  # noqa: F401
except (ImportError, OSError):  # no binding or no libseccomp.so.2: each decoder reports "unavailable"
    pass
