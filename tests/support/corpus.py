"""A corpus of broken and odd image files, for every format the decoder accepts, built from a seed.

``build_corpus(folder, seed)`` writes a few hundred files and returns their paths, the same files for the
same seed: valid small images of each format and mode (named ``*-valid.*``); each of them truncated at many offsets, with bits
flipped and bytes overwritten in its header and its data, and with a wrong magic number; empty files;
headers declaring huge pictures in tiny files (PNG, BMP, GIF, JPEG, WebP, TIFF), TIFFs with absurd strip
counts and unsupported compressions; animated GIF and WebP; PostScript, PDF, SVG and HTML named ``.jpg``.
Whatever the decoder makes of a file, it must be a result or an ``InputError`` (tests/unit/test_corpus.py;
the daemon-level test reuses this builder).
"""
from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path
import numpy as np
from PIL import Image

HEADER = 64  # bytes counted as "header" for the mutations; the rest is data


def _picture(rng: np.random.Generator, size: tuple[int, int] = (40, 30)) -> Image.Image:
    small = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8))
    return small.resize(size, Image.Resampling.BICUBIC)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _frames(rng: np.random.Generator, n: int = 3) -> list[Image.Image]:
    return [_picture(rng) for _ in range(n)]


def _valid(rng: np.random.Generator) -> dict[str, tuple[str, bytes]]:
    """name -> (extension, bytes) of well-formed small images: every accepted format, its common modes."""
    rgb = _picture(rng)
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    p = rgb.quantize(16)
    grey16 = Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = _frames(rng)
    out = {
        "jpeg-rgb": ("jpg", _save(rgb, "JPEG", quality=85)),
        "jpeg-progressive": ("jpg", _save(rgb, "JPEG", progressive=True)),
        "jpeg-444-exif6": ("jpg", _save(rgb, "JPEG", subsampling=0, exif=exif.tobytes())),
        "jpeg-grey": ("jpg", _save(rgb.convert("L"), "JPEG")),
        "jpeg-cmyk": ("jpg", _save(rgb.convert("CMYK"), "JPEG")),
        "png-rgb": ("png", _save(rgb, "PNG")),
        "png-rgba": ("png", _save(rgba, "PNG")),
        "png-p": ("png", _save(p, "PNG")),
        "png-p-trns": ("png", _save(p, "PNG", transparency=0)),
        "png-la": ("png", _save(rgba.convert("LA"), "PNG")),
        "png-1": ("png", _save(rgb.convert("1"), "PNG")),
        "png-i16": ("png", _save(grey16, "PNG")),
        "png-apng": ("png", _save(frames[0], "PNG", save_all=True, append_images=frames[1:])),
        "webp-lossy": ("webp", _save(rgb, "WEBP", quality=80)),
        "webp-lossless-rgba": ("webp", _save(rgba, "WEBP", lossless=True)),
        "webp-animated": ("webp", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:])),
        "gif": ("gif", _save(p, "GIF")),
        "gif-trns": ("gif", _save(p, "GIF", transparency=0)),
        "gif-animated": ("gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40)),
        "bmp-rgb": ("bmp", _save(rgb, "BMP")),
        "bmp-rgba": ("bmp", _save(rgba, "BMP")),
        "bmp-p": ("bmp", _save(p, "BMP")),
        "bmp-1": ("bmp", _save(rgb.convert("1"), "BMP")),
        "bmp-rle8": ("bmp", _bmp_rle8()),
        "ppm-rgb": ("ppm", _save(rgb, "PPM")),
        "pgm-grey": ("pgm", _save(rgb.convert("L"), "PPM")),
    }
    for c in ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits", "jpeg"):
        out[f"tiff-rgb-{c}"] = ("tif", _save(rgb, "TIFF", compression=c))
    for mode, img in (("1", rgb.convert("1")), ("l", rgb.convert("L")), ("rgba", rgba),
                      ("cmyk", rgb.convert("CMYK")), ("i16", grey16)):
        out[f"tiff-{mode}"] = ("tif", _save(img, "TIFF", compression="tiff_lzw" if mode != "1" else "group4"))
    out["tiff-tiled"] = ("tif", _tiff(40, 30, tile=(16, 16)))
    return out


def _bmp(w: int, h: int, bpp: int = 24, compression: int = 0, data: bytes = b"", colours: int = 0) -> bytes:
    palette = bytes(range(256)) * 4 if bpp <= 8 else b""  # ``colours`` may claim more than it holds
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, compression, len(data), 2835, 2835, colours, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset) + info + palette + data


def _bmp_rle8() -> bytes:
    rows = b"".join(bytes([16, r % 256, 0, 0]) for r in range(8)) + b"\x00\x01"  # 8 runs of 16, then EOF
    return _bmp(16, 8, 8, 1, rows)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(w: int, h: int, colour: int = 2, depth: int = 8, idat: bytes | None = None) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat or zlib.compress(bytes(64))) + \
        _chunk(b"IEND", b"")


def _gif_screen(w: int, h: int, frame: tuple[int, int] = (2, 2)) -> bytes:
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + bytes(6) + b"," +
            struct.pack("<HHHHB", 0, 0, *frame, 0) + b"\x02\x02\x44\x01\x00;")


def _tiff(w: int, h: int, *, compression: int = 1, strips: int | None = None, rows_per_strip: int | None = None,
          tile: tuple[int, int] | None = None, bits: int = 8, samples: int = 3, ifd_loop: bool = False) -> bytes:
    """A little-endian TIFF, written by hand so that any tag can lie."""
    pixel = max(1, bits * samples // 8)
    if tile:
        n = -(-w // tile[0]) * -(-h // tile[1])
        block = tile[0] * tile[1] * pixel
    else:
        rps = rows_per_strip or h
        n = strips if strips is not None else -(-h // max(rps, 1))
        block = w * max(rps, 1) * pixel
    data_at, stored = 8, min(block, 1024)  # the counts say ``block``; the file holds at most 1 KB of each
    data = (bytes(range(256)) * 4)[:stored] * min(n, 8)
    arrays_at = data_at + len(data)
    listed = n <= 1 << 18
    offsets = struct.pack(f"<{n}I", *[data_at + (i % 8) * stored for i in range(n)]) if listed else b""
    counts = struct.pack(f"<{n}I", *([min(block, 0xFFFFFFFF)] * n)) if listed else b""
    ifd_at = arrays_at + len(offsets) + len(counts)
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, bits), (259, 3, 1, compression),
               (262, 3, 1, 2 if samples >= 3 else 1), (277, 3, 1, samples)]
    if tile:
        entries += [(322, 3, 1, tile[0]), (323, 3, 1, tile[1]), (324, 4, n, arrays_at),
                    (325, 4, n, arrays_at + len(offsets))]
    else:
        # a strip count past what the file holds points its arrays beyond the end
        where = arrays_at if offsets else 1 << 30
        entries += [(273, 4, n, where if n > 1 else data_at), (278, 4, 1, rows_per_strip or h),
                    (279, 4, n, where + len(offsets) if n > 1 else min(block, 0xFFFFFFFF))]
    entries.sort()
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    ifd += struct.pack("<I", ifd_at if ifd_loop else 0)
    return b"II*\x00" + struct.pack("<I", ifd_at) + data + offsets + counts + ifd


def _crafted(rng: np.random.Generator) -> dict[str, tuple[str, bytes]]:
    """Headers that lie about the picture, and other formats under an image's name."""
    jpeg = bytearray(_save(_picture(rng), "JPEG"))
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = struct.pack(">HH", 65500, 65500)
    webp = bytearray(_save(_picture(rng), "WEBP", lossless=True))
    webp[21:25] = struct.pack("<I", 0x3FFF | 0x3FFF << 14)  # VP8L 14-bit width-1 and height-1: 16384x16384
    return {
        "png-65535x65535": ("png", _png(65535, 65535)),
        "png-7000x7000-rgba-tiny": ("png", _png(7000, 7000, colour=6)),
        "png-zero-width": ("png", _png(0, 10)),
        "png-bad-depth": ("png", _png(10, 10, colour=2, depth=3)),
        "bmp-negative-width": ("bmp", _bmp(-40, 30, data=bytes(3600))),
        "bmp-top-down": ("bmp", _bmp(40, -30, data=bytes(3600))),
        "bmp-huge": ("bmp", _bmp(0x7FFFFFFF, 0x7FFFFFFF, data=bytes(16))),
        "bmp-7000x7000-tiny": ("bmp", _bmp(7000, 7000, data=bytes(64))),
        "bmp-bpp7": ("bmp", _bmp(10, 10, bpp=7, data=bytes(100))),
        "bmp-jpeg-compression": ("bmp", _bmp(10, 10, compression=4, data=bytes(100))),
        "bmp-rle8-huge": ("bmp", _bmp(7000, 7000, 8, 1, b"\x00\x01")),
        "bmp-palette-overflow": ("bmp", _bmp(10, 10, bpp=8, colours=0x7FFFFFFF, data=bytes(100))),
        "gif-screen-65535x65535": ("gif", _gif_screen(65535, 65535)),
        "gif-frame-past-screen": ("gif", _gif_screen(10, 10, frame=(5000, 5000))),
        "jpeg-sof-65500x65500": ("jpg", bytes(jpeg)),
        "webp-16384x16384": ("webp", bytes(webp)),
        "tiff-1e9-strips": ("tif", _tiff(40, 30, strips=1_000_000_000)),
        "tiff-70000-strips": ("tif", _tiff(40, 70000, rows_per_strip=1)),
        "tiff-rows-per-strip-0": ("tif", _tiff(40, 30, rows_per_strip=0)),
        "tiff-huge": ("tif", _tiff(0xFFFFFFFF, 0xFFFFFFFF, strips=1)),
        "tiff-7000x7000-one-strip": ("tif", _tiff(7000, 7000, strips=1, compression=5)),
        "tiff-compression-50000": ("tif", _tiff(40, 30, compression=50000)),
        "tiff-compression-jpeg2000": ("tif", _tiff(40, 30, compression=34712)),
        "tiff-compression-lzw-garbage": ("tif", _tiff(40, 30, compression=5)),
        "tiff-bits-3": ("tif", _tiff(40, 30, bits=3, samples=1)),
        "tiff-samples-255": ("tif", _tiff(40, 30, samples=255)),
        "tiff-ifd-loop": ("tif", _tiff(40, 30, ifd_loop=True)),
        "tiff-tiled-huge": ("tif", _tiff(30000, 1500, tile=(16, 16))),
        "postscript": ("jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\nshowpage\n"),
        "pdf": ("jpg", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"),
        "svg": ("jpg", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'),
        "html": ("jpg", b"<!DOCTYPE html><html><body><img src=x.jpg></body></html>"),
        "text": ("png", b"just some text, not a picture\n" * 4),
        "random": ("tif", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()),
    }


_MUTATIONS: tuple[str, ...] = ("truncate",) * 6 + ("flip-header",) * 3 + ("flip-data",) * 2 + \
    ("overwrite-header", "overwrite-data", "wrong-magic")


def _mutate(data: bytes, how: str, r: random.Random) -> bytes:
    b = bytearray(data)
    head = min(HEADER, len(b) - 1)
    if how == "truncate":
        return bytes(b[:r.randrange(1, len(b))])
    if how.startswith("flip"):
        at = r.randrange(0, head) if how == "flip-header" else r.randrange(head, len(b))
        b[at] ^= 1 << r.randrange(8)
    elif how.startswith("overwrite"):
        at = r.randrange(0, head) if how == "overwrite-header" else r.randrange(head, len(b))
        b[at:at + 4] = r.choice((b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"))
    else:  # the first bytes of another format, the rest unchanged
        b[:4] = r.choice((b"\x89PNG", b"\xff\xd8\xff\xe0", b"GIF8", b"II*\x00", b"RIFF", b"%!PS", b"BM\x00\x00"))
    return bytes(b)


def build_corpus(folder: Path, seed: int) -> list[Path]:
    """Write the corpus into ``folder`` (created); the same files, in the same order, for the same seed."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, r = np.random.default_rng(seed), random.Random(seed)
    files: list[tuple[str, str, bytes]] = []
    for name, (ext, data) in _valid(rng).items():
        files.append((f"{name}-valid", ext, data))
        files += [(f"{name}-{how}{i}", ext, _mutate(data, how, r)) for i, how in enumerate(_MUTATIONS)]
    files += [(name, ext, data) for name, (ext, data) in _crafted(rng).items()]
    files += [(f"empty-{ext}", ext, b"") for ext in ("jpg", "png", "webp", "gif", "bmp", "tif", "ppm")]
    paths = []
    for i, (name, ext, data) in enumerate(files):
        path = folder / f"{i:03d}-{name}.{ext}"
        path.write_bytes(data)
        paths.append(path)
    return paths

