"""Opening an image whose decoding cost is known, and bounded, before a pixel of it is decoded.

Only the formats we mean are tried: ``Image.open`` otherwise tries every plugin Pillow has, whatever the
file is named, and its EPS plugin hands PostScript to Ghostscript, an external program. From the header
alone (size, mode, the JPEG draft scale, progressive coefficients, TIFF strips) the peak memory of the
decode plus the conversion (``convert.py``) is estimated and refused over ``max_decode_mb``, before
``load()``. Whatever the libraries raise on a bad file becomes an ``InputError`` with the result's kind.
"""
from __future__ import annotations

import functools
import io
import math
import os
import re
from typing import Any, BinaryIO, Union

from PIL import Image, UnidentifiedImageError

from ..errors import InputError
from .convert import conversion_cost, orientation, pixel_bytes, reduction
from .sniff import sniff

Source = Union[str, os.PathLike, bytes, BinaryIO]

# The six formats cameras and tools write, and Netpbm: ``is_image_name`` lists .ppm/.pgm, and a Netpbm
# file is a text header and raw samples.
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
# Never accepted, whatever the config says: loading EPS runs Ghostscript (``gs``) on the file.
RUNS_PROGRAMS = frozenset({"EPS"})
DEFAULT_MAX_PIXELS = 50_000_000  # a 12 MP phone photo is ~12e6; beyond this it is most likely a bomb
# The budget: a 1 GB Pi keeps ~150 MB for the kernel and system services and ~110 MB for the model
# process, and leaves ~100 MB of page cache so that the model and inputs are not read from the SD card
# again and again: ~640 MB for the two decoder processes, ~320 MB each. Each costs ~40 MB before it
# decodes anything (interpreter, numpy, Pillow) and holds the input file's bytes (a 12 MP photo is
# 3-8 MB, rarely 20): 256 MB left to decode. That fits the worst image max_pixels lets through with the
# band conversion (50 MP RGB or RGBA: 200 MB decoded, ~25 MB of bands and output), and refuses what
# would not (a 50 MP WebP: ~800 MB through libwebp's canvases).
DEFAULT_MAX_DECODE_MB = 256
MB = 1 << 20
# Not counted per image: resize_crop's intermediate (crop width x source rows), Python objects.
_SLACK = 2 * MB
_UNSUPPORTED = re.compile(r"unsupported|not supported|not available|unknown (pixel|raw) mode", re.I)
# What Pillow raises for data it could not parse, where the message says enough without the type's name.
_PLAIN = (OSError, SyntaxError, ValueError, EOFError)


def open_image(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS, draft_short: int | None = None, *,
               formats: tuple[str, ...] = DEFAULT_FORMATS, max_decode_mb: float = DEFAULT_MAX_DECODE_MB,
               reduce_short: int | None = None) -> Image.Image:
    """Decode an image, raising ``InputError`` with a result-JSON ``kind`` for every failure.

    Only ``formats`` are tried; anything else is refused as ``unsupported``, named where its first bytes
    say what it is. With ``draft_short``, a JPEG whose shorter side is at least twice that is decoded at
    1/2, 1/4 or 1/8 scale in the DCT domain (``Image.draft``), never below ``draft_short`` on its shorter
    side: a 12 MP photo then costs a fraction of its full decode. ``reduce_short`` is what ``to_rgb`` will
    be given (the estimate counts its conversion). ``img.info["full_size"]`` keeps the stored size.
    """
    accepted = checked_formats(formats)
    fp: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        img = Image.open(fp, formats=accepted)
    except UnidentifiedImageError as e:
        raise _unidentified(source, accepted) from e
    except Exception as e:
        raise as_input_error(e) from e
    try:
        w, h = img.size
        if w * h > max_pixels:
            raise InputError("too_large", f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
        img.info["full_size"] = (w, h)
        apply_draft(img, draft_short)
        need = decode_cost(img, reduce_short=reduce_short, file_bytes=_file_bytes(source))
        if need > max_decode_mb * MB:
            dw, dh = img.size
            raise InputError("too_large", f"{dw}x{dh} {img.format} ({img.mode}) needs ~{need / MB:.0f} MB "
                                          f"to decode, over pipeline.max_decode_mb ({max_decode_mb:g})")
        img.load()
    except InputError:
        img.close()
        raise
    except Exception as e:
        img.close()
        raise as_input_error(e) from e
    return img


def apply_draft(img: Image.Image, draft_short: int | None) -> None:
    """Have a JPEG whose shorter side is at least ``2 * draft_short`` decoded at the smallest DCT scale
    that keeps that side at least ``draft_short``; nothing for other images."""
    w, h = img.size
    if draft_short and img.format in ("JPEG", "MPO") and min(w, h) >= 2 * draft_short:
        f = draft_short / min(w, h)
        img.draft("RGB", (math.ceil(w * f), math.ceil(h * f)))


def decode_cost(img: Image.Image, *, reduce_short: int | None, file_bytes: int = 0) -> int:
    """Bytes that loading ``img`` (opened, not loaded) and converting it with ``to_rgb`` take at peak,
    beyond the file's own bytes: the decoded picture, the decoder's buffers, the conversion's."""
    w, h = img.size
    turn = orientation(img) if _exif_is_read(img) else 1
    k = reduction(img.size, reduce_short)
    return (w * h * pixel_bytes(img.mode) + _decoder_cost(img, file_bytes)
            + conversion_cost(img.mode, img.size, k, turn) + _SLACK)


def _exif_is_read(img: Image.Image) -> bool:
    # A PNG's getexif() decodes the whole image to look for an eXIf chunk after the pixels; the estimate
    # takes such a picture as upright (a turn then costs one more copy of the reduced output).
    return img.format != "PNG" or "exif" in img.info


def _decoder_cost(img: Image.Image, file_bytes: int) -> int:
    w, h = img.size
    if img.format == "WEBP":
        # Pillow's only WebP path is libwebp's animation decoder: two RGBA canvases, and the frame handed
        # over as bytes (a third copy); Pillow read the whole file into one more buffer when it opened it.
        return 12 * w * h + file_bytes
    if img.format in ("JPEG", "MPO") and img.info.get("progressive"):
        # A progressive JPEG's DCT coefficients are buffered whole and at full size (two bytes each, one
        # per pixel of each component at its sampling), whatever the draft scale.
        fw, fh = img.info.get("full_size", img.size)
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * len(img.getbands())
        hmax, vmax = max(c[1] for c in layers), max(c[2] for c in layers)
        blocks_w, blocks_h = math.ceil(fw / 8 / hmax) * hmax * 8, math.ceil(fh / 8 / vmax) * vmax * 8
        return sum(2 * blocks_w * blocks_h * c[1] * c[2] // (hmax * vmax) for c in layers)
    if img.format == "TIFF" and img.info.get("compression", "raw") != "raw":
        return _libtiff_cost(img)
    if img.format == "BMP" and img.info.get("compression") in (1, 2):
        return w * h  # Pillow's run-length decoder (Python) builds the picture in a bytearray first
    return 0


def _libtiff_cost(img: Any) -> int:
    """libtiff decodes one strip or tile at a time into its buffer; Pillow unpacks it from there (and
    YCbCr through an RGBA copy of the block)."""
    w, h = img.size
    tags = img.tag_v2
    bits = tags.get(258, (1,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    if len(bits) == 1:  # one value for every sample, as Pillow reads it
        bits = bits * int(tags.get(277, 1))
    sample_bits = sum(int(b) for b in bits)
    tile = (tags.get(322), tags.get(323))
    if tile[0] and tile[1]:
        block = int(tile[0]) * int(tile[1])
    else:
        block = w * min(h, int(tags.get(278, h) or h))
    return block * (math.ceil(sample_bits / 8) + 4)


def _file_bytes(source: Source) -> int:
    if isinstance(source, bytes):
        return len(source)
    try:
        if isinstance(source, (str, os.PathLike)):
            return os.path.getsize(source)
        pos = source.seek(0, io.SEEK_END)
        source.seek(0)
        return pos
    except (OSError, AttributeError, ValueError):
        return 0


@functools.lru_cache(maxsize=8)
def _known_formats(formats: tuple[str, ...]) -> tuple[str, ...]:
    Image.init()
    names = tuple(f.upper() for f in formats)
    unknown = [f for f in names if f not in Image.OPEN]
    if unknown:
        raise ValueError(f"formats Pillow cannot open: {unknown}")
    return names


def checked_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``formats`` upper-cased; ValueError for one Pillow cannot open or one that runs a program."""
    names = _known_formats(tuple(formats))
    banned = sorted(RUNS_PROGRAMS.intersection(names))
    if banned:
        raise ValueError(f"{', '.join(banned)}: decoding runs an external program (Ghostscript); never accepted")
    return names


def _unidentified(source: Source, accepted: tuple[str, ...]) -> InputError:
    prefix = _prefix(source)
    if not prefix:
        return InputError("decode", "empty file (0 bytes)")
    found = sniff(prefix)
    if found is None:
        return InputError("decode", "not a recognised image format")
    what, fmt = found
    if fmt in accepted:
        return InputError("decode", f"{what} whose header is corrupt or truncated")
    named = f"format {fmt}" if fmt else "its format"
    return InputError("unsupported", f"{what}: {named} is not accepted (pipeline.formats: {', '.join(accepted)})")


def _prefix(source: Source, n: int = 256) -> bytes:
    """The first bytes of ``source``, read again (Image.open consumed them); b"" when unreadable."""
    try:
        if isinstance(source, bytes):
            return source[:n]
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as f:
                return f.read(n)
        source.seek(0)
        return source.read(n)
    except (OSError, AttributeError, ValueError):
        return b""


def as_input_error(e: Exception) -> InputError:
    """A library's exception on a bad file -> the ``InputError`` the result JSON reports."""
    if isinstance(e, InputError):
        return e
    if isinstance(e, FileNotFoundError):
        return InputError("io", f"file vanished before it was read: {e.strerror}")
    if isinstance(e, PermissionError):
        return InputError("io", f"cannot read file: {e.strerror}")
    if isinstance(e, Image.DecompressionBombError):
        return InputError("too_large", str(e))
    if isinstance(e, MemoryError):
        return InputError("too_large", f"ran out of memory decoding it{': ' + str(e) if str(e) else ''}")
    if isinstance(e, OSError) and e.errno is not None:  # the system's, not a decoder's
        return InputError("io", f"cannot read file: {e.strerror or e}")
    text = (str(e) or repr(e))[:200]
    # Pillow words its refusals of a format's rarer variants ("unsupported BMP compression") in these types;
    # the same words in any other (a TypeError's "unsupported operand") are a parser tripping on bad data.
    if isinstance(e, NotImplementedError) or isinstance(e, _PLAIN) and _UNSUPPORTED.search(text):
        return InputError("unsupported", f"a variant of the format Pillow cannot decode: {text}")
    if isinstance(e, _PLAIN):
        return InputError("decode", f"corrupt or truncated image: {text}")
    kind = type(e)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return InputError("decode", f"corrupt or truncated image ({name}: {text})")
