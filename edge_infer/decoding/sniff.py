"""What a file is, from its first bytes: for a helpful message when no accepted format takes it.

Never used to decide what to decode (``Image.open(formats=...)`` does that); only to name what was refused,
so that "a PostScript file" reads better than "cannot identify image file".
"""
from __future__ import annotations

# (offset, magic, what it is, Pillow's format name or "" where Pillow has no reader)
_MAGIC: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"\xff\xd8\xff", "a JPEG file", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "a PNG file", "PNG"),
    (0, b"GIF87a", "a GIF file", "GIF"),
    (0, b"GIF89a", "a GIF file", "GIF"),
    (0, b"BM", "a BMP file", "BMP"),
    (0, b"II*\x00", "a TIFF file", "TIFF"),
    (0, b"MM\x00*", "a TIFF file", "TIFF"),
    (0, b"II+\x00", "a BigTIFF file", "TIFF"),
    (0, b"MM\x00+", "a BigTIFF file", "TIFF"),
    (8, b"WEBP", "a WebP file", "WEBP"),
    (0, b"%!PS", "a PostScript file", "EPS"),
    (0, b"\xc5\xd0\xd3\xc6", "a PostScript file (DOS EPS)", "EPS"),
    (0, b"%PDF", "a PDF document", "PDF"),
    (0, b"8BPS", "a Photoshop document", "PSD"),
    (0, b"\x00\x00\x01\x00", "a Windows icon", "ICO"),
    (0, b"\x00\x00\x02\x00", "a Windows cursor", "CUR"),
    (0, b"icns", "a macOS icon", "ICNS"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 file", "JPEG2000"),
    (0, b"\xffO\xffQ", "a JPEG 2000 codestream", "JPEG2000"),
    (4, b"ftypavif", "an AVIF file", "AVIF"),
    (4, b"ftypavis", "an AVIF file", "AVIF"),
    (4, b"ftypheic", "a HEIC file", ""),
    (4, b"ftypheix", "a HEIC file", ""),
    (4, b"ftypmif1", "a HEIF file", ""),
    (0, b"qoif", "a QOI file", "QOI"),
    (0, b"DDS ", "a DirectDraw surface", "DDS"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE compound document (FlashPix, Office)", "FPX"),
    (0, b"\xd7\xcd\xc6\x9a", "a Windows metafile", "WMF"),
    (0, b"SIMPLE  =", "a FITS file", "FITS"),
    (0, b"\x59\xa6\x6a\x95", "a Sun raster file", "SUN"),
    (0, b"\x01\xda", "an SGI image", "SGI"),
    (0, b"BLP1", "a BLP texture", "BLP"),
    (0, b"BLP2", "a BLP texture", "BLP"),
    (0, b"gimp xcf", "a GIMP document", ""),
    (0, b"v/1\x01", "an OpenEXR file", ""),
    (0, b"#?RADIANCE", "a Radiance HDR file", ""),
    (0, b"PK\x03\x04", "a ZIP archive", ""),
    (0, b"\x1f\x8b", "a gzip archive", ""),
    (0, b"\x7fELF", "an executable", ""),
)
_TEXT: tuple[tuple[bytes, str, str], ...] = (
    (b"<svg", "an SVG drawing", "SVG"),
    (b"<!doctype html", "an HTML page", "HTML"),
    (b"<html", "an HTML page", "HTML"),
    (b"/* xpm */", "an XPM image", "XPM"),
    (b"#define", "an XBM image", "XBM"),
)


def sniff(prefix: bytes) -> tuple[str, str] | None:
    """``(what it is, format name)`` of a file starting with ``prefix``, or None when unknown.

    The format name is Pillow's where Pillow reads it (what ``pipeline.formats`` would have to list), else
    a plain name (SVG, HTML) or "" for the rest.
    """
    for offset, magic, what, fmt in _MAGIC:
        if prefix[offset:offset + len(magic)] == magic:
            return what, fmt
    if len(prefix) >= 3 and prefix[0:1] == b"P" and prefix[1:2] in b"1234567fF" and prefix[2:3].isspace():
        return "a Netpbm file", "PPM"
    text = prefix.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for start, what, fmt in _TEXT:
        if text.startswith(start):
            return what, fmt
    if text.startswith(b"<?xml"):
        return ("an SVG drawing", "SVG") if b"<svg" in text else ("an XML document", "XML")
    return None
