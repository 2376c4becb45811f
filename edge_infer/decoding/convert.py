"""A decoded picture -> upright RGB, at most ``k`` times smaller, with few full-size copies.

Converting a whole image makes full-size intermediates: a palette PNG with transparency went P -> RGBA ->
composite on a full-size white RGBA -> RGB, four 4-byte-per-pixel copies beside the decoded image (~1 GB
for a 63 KB 7000x7000 file). Here the conversion runs on horizontal bands of ``k * n`` rows, each reduced
by ``k`` (a box filter) as soon as it is converted and pasted into the small output, so the peak is the
decoded image, one band's intermediates and the output. ``k`` keeps the shorter side at least twice the
resize target, like the JPEG draft rule, so the final antialiased resize still does the real filtering.
The EXIF orientation is applied last, to the small output.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageOps

# Pixels in one band (rounded to whole multiples of k rows): ~4 MB per 4-byte copy of it.
BAND_PIXELS = 1 << 20
# The most one band costs per pixel during its conversion: its crop (up to 4 bytes), RGBA (4), the white
# background (4), the composite (4), its RGB (4), and the reduced result.
BAND_BYTES_PER_PIXEL = 21
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
GREY_MODES = ("1", "L", "F", *SIXTEEN_BIT_MODES)  # converted to L; RGB only once reduced
ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def pixel_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's own storage: one for 8-bit single bands, four for every multi-band mode
    (RGB is stored as RGBX), two for 16-bit grey, four for 32-bit I and F."""
    if mode in ("1", "L", "P"):
        return 1
    return 2 if mode.startswith("I;16") else 4


def reduction(size: tuple[int, int], reduce_short: int | None) -> int:
    """The largest ``k`` that keeps the shorter side at least ``reduce_short``; 1 without a target."""
    if not reduce_short:
        return 1
    return max(1, min(size) // reduce_short)


def orientation(img: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1 to 8; 1 when absent or out of range."""
    value = img.getexif().get(ORIENTATION, 1)
    return value if value in _TRANSPOSE else 1


def _used_as_decoded(mode: str, k: int, turn: int) -> bool:
    # RGB needs no conversion, and resize_crop reads only the crop's region: no full-size copy, unless the
    # EXIF orientation asks for a turn, which copies the image (and, when reducing, is done on the result).
    return mode == "RGB" and (k == 1 or turn == 1)


def conversion_cost(mode: str, size: tuple[int, int], k: int, turn: int) -> int:
    """Bytes ``to_rgb`` allocates beyond the decoded image, at its peak."""
    w, h = size
    if _used_as_decoded(mode, k, turn):
        return 0 if turn == 1 else w * h * 4
    out = math.ceil(w / k) * math.ceil(h / k)
    grey = mode in GREY_MODES
    band = 0 if mode == "RGB" else w * min(h, _band_rows(w, k)) * BAND_BYTES_PER_PIXEL
    return band + out * (1 if grey else 4) + out * 4 * (grey + (turn != 1))


def _band_rows(w: int, k: int) -> int:
    return max(1, BAND_PIXELS // (w * k)) * k


def to_rgb(img: Image.Image, reduce_short: int | None = None) -> Image.Image:
    """Upright RGB: alpha composited on white, other modes converted, EXIF orientation applied; reduced by
    ``reduction(img.size, reduce_short)`` first where the mode needs converting (or the picture turning).

    An RGB picture that needs no turn is returned as it is (the shared photos' path, unchanged).
    """
    turn = orientation(img)
    k = reduction(img.size, reduce_short)
    if _used_as_decoded(img.mode, k, turn):
        # in place: the default returns a full copy even when there is nothing to rotate
        ImageOps.exif_transpose(img, in_place=True)
        return img
    small = img.reduce(k) if img.mode == "RGB" else _convert_in_bands(img, k)
    if small.mode != "RGB":
        small = small.convert("RGB")
    return small.transpose(_TRANSPOSE[turn]) if turn != 1 else small


def _convert_in_bands(img: Image.Image, k: int) -> Image.Image:
    w, h = img.size
    rows = _band_rows(w, k)
    out: Image.Image | None = None
    for top in range(0, h, rows):
        band = _convert(img.crop((0, top, w, min(top + rows, h))))
        if k > 1:
            band = band.reduce(k)
        if out is None:
            out = Image.new(band.mode, (math.ceil(w / k), math.ceil(h / k)))
        out.paste(band, (0, top // k))
    assert out is not None  # Pillow refuses images with no rows
    return out


def _convert(band: Image.Image) -> Image.Image:
    """One band -> RGB (colour) or L (grey), with the same arithmetic as converting the whole image."""
    if band.mode == "P":
        band = band.convert("RGBA" if "transparency" in band.info else "RGB")
    if band.mode in ALPHA_MODES:
        rgba = band.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if band.mode in SIXTEEN_BIT_MODES:
        # 16-bit greyscale: scale to 8 bits by the full 16-bit range rather than clipping at 255 (32-bit I
        # is read as 16-bit, its values clipped to that range).
        arr = np.asarray(band)
        if band.mode == "I":
            arr = np.clip(arr, 0, 65535)
        return Image.fromarray((arr >> 8).astype(np.uint8))
    return band.convert("L" if band.mode in GREY_MODES else "RGB")
