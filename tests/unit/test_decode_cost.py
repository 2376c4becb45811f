"""Decoding whose cost is known and bounded: memory, formats, external programs and library exceptions."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys

import pytest
from PIL import Image, ImageFile

from edge_infer.errors import InputError
from edge_infer.model.preprocess import PreprocessSpec, crop_pixels
from tests.support.decode_memory import peak_growth, write_case

SPEC = PreprocessSpec()
LARGE_PNGS = ("palette+transparency 7000x7000 PNG", "RGBA 7000x7000 PNG")
# A minimal EPS: Pillow's EPS plugin hands anything like it to Ghostscript when it is loaded.
POSTSCRIPT = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n%%EndComments\n"
              b"newpath 0 0 moveto 16 16 lineto stroke\nshowpage\n%%EOF\n")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def large_pngs(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("large")
    return {name: write_case(name, folder) for name in LARGE_PNGS}


@pytest.mark.xfail(strict=True, reason="today: P -> RGBA -> alpha_composite on a full-size white RGBA -> RGB, "
                                       "~1 GB for a 63 KB file")
@pytest.mark.parametrize("case", LARGE_PNGS)
def test_a_large_png_decodes_within_a_bound_far_below_its_full_size_copies(large_pngs, case):
    m = peak_growth(large_pngs[case])
    assert m["outcome"] == "ok"
    assert m["growth_mb"] < 400, m  # today ~1 GB: four full-size RGBA copies beside the decoded image


def _stand_in_gs(tmp_path):
    """A ``gs`` first on PATH that only leaves a marker: proof of whether Pillow ran Ghostscript."""
    bin_dir, marker = tmp_path / "bin", tmp_path / "gs-ran"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f'#!/bin/sh\ntouch "{marker}"\nexit 1\n')
    gs.chmod(0o755)
    photo = tmp_path / "x.jpg"
    photo.write_bytes(POSTSCRIPT)
    return photo, marker, {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_the_stand_in_gs_is_what_pillow_runs_on_postscript_opened_unrestricted(tmp_path):
    """The negative test below means something only if this stand-in is what Pillow would run."""
    photo, marker, env = _stand_in_gs(tmp_path)
    code = "import sys; from PIL import Image\ntry: Image.open(sys.argv[1]).load()\nexcept Exception: pass"
    subprocess.run([sys.executable, "-c", code, str(photo)], env=env, check=True, timeout=60)
    assert marker.exists()


@pytest.mark.xfail(strict=True, reason="today: Image.open tries every plugin, EPS included, and runs gs")
def test_postscript_named_jpg_is_refused_without_running_ghostscript(tmp_path):
    photo, marker, env = _stand_in_gs(tmp_path)
    code = ("import sys\nfrom edge_infer.errors import InputError\n"
            "from edge_infer.model.preprocess import PreprocessSpec, crop_pixels\n"
            "try: crop_pixels(sys.argv[1], PreprocessSpec())\n"
            "except InputError as e: print(e.kind, e.message)")
    out = subprocess.run([sys.executable, "-c", code, str(photo)], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    assert not marker.exists(), "Ghostscript was run"
    assert out.stdout.startswith("unsupported") and "PostScript" in out.stdout and "EPS" in out.stdout


_ESCAPED_TODAY = pytest.mark.xfail(strict=True, reason="today only OSError, SyntaxError, ValueError and EOFError "
                                                       "are mapped; the rest escape")
LIBRARY_ERRORS = [
    pytest.param(NotImplementedError("no such feature"), "unsupported", marks=_ESCAPED_TODAY),
    pytest.param(struct.error("unpack requires a buffer of 4 bytes"), "decode", marks=_ESCAPED_TODAY),
    pytest.param(SyntaxError("not a PNG file"), "decode"),
    pytest.param(IndexError("list index out of range"), "decode", marks=_ESCAPED_TODAY),
    pytest.param(TypeError("unsupported operand"), "decode", marks=_ESCAPED_TODAY),
    pytest.param(KeyError(278), "decode", marks=_ESCAPED_TODAY),
    pytest.param(ValueError("buffer is not large enough"), "decode"),
    pytest.param(ZeroDivisionError("division by zero"), "decode", marks=_ESCAPED_TODAY),
    pytest.param(MemoryError(), "too_large", marks=_ESCAPED_TODAY),
    pytest.param(EOFError(), "decode"),
    pytest.param(OSError("image file is truncated"), "decode"),
    pytest.param(RecursionError("maximum recursion depth exceeded"), "decode", marks=_ESCAPED_TODAY),
]


@pytest.mark.parametrize("error,kind", LIBRARY_ERRORS)
@pytest.mark.parametrize("stage", ["open", "load"])
def test_every_library_exception_becomes_a_typed_input_error(monkeypatch, error, kind, stage):
    def fail(*args, **kwargs):
        raise error

    if stage == "open":
        monkeypatch.setattr(Image, "open", fail)
    else:
        monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(InputError) as e:
        crop_pixels(_png(), SPEC)
    assert e.value.kind == kind and e.value.message
