"""Image preprocessing: the one implementation used by the daemon, ``classify``, ``bench`` and calibration.

The model's manifest says what it expects (``PreprocessSpec``); everything here is a pure function of the
input and that spec, so the model never sees pixels prepared two different ways.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
DEFAULT_MAX_PIXELS = 50_000_000  # a 12 MP phone photo is ~12e6; beyond this it is most likely a bomb


@dataclass(frozen=True)
class PreprocessSpec:
    """What the model expects, as written in its manifest (torchvision's ImageNet transforms by default)."""

    resize: int = 256  # shorter side, before the centre crop
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.layout != "NCHW" or self.dtype != "float32":
            raise ValueError(f"unsupported input layout/dtype {self.layout}/{self.dtype}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop} resize={self.resize}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        return cls(
            resize=int(d["resize"]),
            crop=int(d["crop"]),
            interpolation=str(d["interpolation"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
            layout=str(d.get("layout", "NCHW")),
            dtype=str(d.get("dtype", "float32")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
            "layout": self.layout,
            "dtype": self.dtype,
            "color": "RGB",
            "scale": "pixel / 255, then (x - mean) / std",
        }


@dataclass
class Prepared:
    """One preprocessed image: the CHW tensor and the decoded size (for the result's ``image`` field)."""

    tensor: np.ndarray
    width: int
    height: int


def open_image(source: str | os.PathLike[str] | bytes | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS,
               draft_short: int | None = None) -> Image.Image:
    """Decode an image, raising ``InputError`` with a result-JSON ``kind`` for every failure.

    With ``draft_short``, a JPEG whose shorter side is at least twice that is decoded at 1/2, 1/4 or 1/8
    scale in the DCT domain (``Image.draft``), never below ``draft_short`` on its shorter side: a 12 MP
    photo then costs a fraction of its full decode. ``img.info["full_size"]`` keeps the stored size.
    """
    fp: Any = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        img = Image.open(fp)
        w, h = img.size
        if w * h > max_pixels:
            raise InputError("too_large", f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
        img.info["full_size"] = (w, h)
        if draft_short and img.format == "JPEG" and min(w, h) >= 2 * draft_short:
            f = draft_short / min(w, h)
            img.draft("RGB", (math.ceil(w * f), math.ceil(h * f)))
        img.load()
    except InputError:
        raise
    except FileNotFoundError as e:
        raise InputError("io", f"file vanished before it was read: {e.strerror}") from e
    except PermissionError as e:
        raise InputError("io", f"cannot read file: {e.strerror}") from e
    except UnidentifiedImageError as e:
        raise InputError("decode", "not a recognised image format") from e
    except Image.DecompressionBombError as e:
        raise InputError("too_large", str(e)) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        # Pillow reports truncated and corrupt data as OSError/SyntaxError/ValueError depending on the codec.
        raise InputError("decode", f"corrupt or truncated image: {e}") from e
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Upright RGB: EXIF orientation applied, alpha composited on white, other modes converted."""
    # in place: the default returns a full copy even when there is nothing to rotate
    ImageOps.exif_transpose(img, in_place=True)
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits by the full 16-bit range rather than clipping at 255.
        arr = np.asarray(img, dtype=np.uint32)
        return Image.fromarray((arr >> 8).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def resize_crop(img: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """torchvision's ``Resize(spec.resize)`` then ``CenterCrop(spec.crop)``, computing only the crop.

    ``Image.resize(box=...)`` resamples just the source region that survives the crop, with the filter
    positions and support of the full resize (Pillow takes the support from outside the box): the same
    pixels but for rounding (at most one level, on under 1% of pixels) at 60% of the cost. fp32 top-1 on
    the shared photos is identical (85.5%, torchvision's figure).
    """
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = spec.resize, int(spec.resize * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    left = int(round((new_w - spec.crop) / 2.0))
    top = int(round((new_h - spec.crop) / 2.0))
    if (new_w, new_h) == (w, h):
        return img.crop((left, top, left + spec.crop, top + spec.crop))
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + spec.crop) * sx, (top + spec.crop) * sy)
    return img.resize((spec.crop, spec.crop), INTERPOLATIONS[spec.interpolation], box=box)


def normalise(img: Image.Image | np.ndarray, spec: PreprocessSpec, out: np.ndarray | None = None) -> np.ndarray:
    """HWC uint8 -> CHW float32 ``(x / 255 - mean) / std``, written into ``out`` when given (a batch slot).

    Computed in place in the destination: no full-size temporaries, which on a small device cost as much
    memory traffic as the arithmetic.
    """
    if out is None:
        out = np.empty((3, spec.crop, spec.crop), np.float32)
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    out[...] = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)  # the cast happens in the copy
    out *= np.float32(1.0 / 255.0) / std
    out -= np.asarray(spec.mean, dtype=np.float32)[:, None, None] / std
    return out


def crop_pixels(source: str | os.PathLike[str] | bytes | BinaryIO, spec: PreprocessSpec,
                max_pixels: int = DEFAULT_MAX_PIXELS, out: np.ndarray | None = None,
                draft: bool = True) -> Prepared:
    """Decode, orient, convert, resize and crop one image: ``tensor`` is the HWC uint8 crop.

    Four times smaller than the normalised tensor, so this is what the daemon keeps between stages; it is
    normalised straight into the inference batch (``normalise(..., out=batch[i])``). Large JPEGs are
    decoded at reduced scale, keeping at least twice the resize target so the final (antialiased) resize
    still does the real filtering; ``width``/``height`` report the stored picture, upright.
    """
    img = open_image(source, max_pixels, draft_short=2 * spec.resize if draft else None)
    try:
        w, h = img.info["full_size"]
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # stored sideways
            w, h = h, w
        p = crop_image(to_rgb(img), spec, out)
        p.width, p.height = w, h
        return p
    except (OSError, ValueError) as e:
        raise InputError("decode", f"cannot convert image: {e}") from e
    finally:
        img.close()


def crop_image(rgb: Image.Image, spec: PreprocessSpec, out: np.ndarray | None = None) -> Prepared:
    """An upright RGB picture (a decoded file, a camera frame) -> its HWC uint8 crop."""
    crop = np.asarray(resize_crop(rgb, spec), dtype=np.uint8)
    if out is not None:
        out[...] = crop
        crop = out
    return Prepared(tensor=crop, width=rgb.width, height=rgb.height)


def prepare(source: str | os.PathLike[str] | bytes | BinaryIO, spec: PreprocessSpec,
            max_pixels: int = DEFAULT_MAX_PIXELS, out: np.ndarray | None = None, draft: bool = True) -> Prepared:
    """Decode, orient, convert, resize, crop and normalise one image: ``tensor`` is CHW float32."""
    p = crop_pixels(source, spec, max_pixels, draft=draft)
    p.tensor = normalise(p.tensor, spec, out)
    return p


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
