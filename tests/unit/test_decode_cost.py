"""Decoding whose cost is known and bounded: memory, formats, external programs and library exceptions."""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys

import pytest
from PIL import Image, ImageFile

from edge_infer.decoding.decode import decode_cost
from edge_infer.decoding.preprocess import PreprocessSpec, crop_pixels
from edge_infer.errors import InputError
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


@pytest.mark.parametrize("case", LARGE_PNGS)
def test_a_large_png_decodes_within_a_bound_far_below_its_full_size_copies(large_pngs, case):
    m = peak_growth(large_pngs[case])
    assert m["outcome"] == "ok"
    assert m["growth_mb"] < 400, m  # today ~1 GB: four full-size RGBA copies beside the decoded image
    with Image.open(large_pngs[case]) as img:  # and the estimate checked against max_decode_mb is honest
        estimate_mb = decode_cost(img, reduce_short=2 * SPEC.resize) / 2**20
    assert m["growth_mb"] <= estimate_mb + 8, (m, estimate_mb)


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


def test_postscript_named_jpg_is_refused_without_running_ghostscript(tmp_path):
    photo, marker, env = _stand_in_gs(tmp_path)
    code = ("import sys\nfrom edge_infer.errors import InputError\n"
            "from edge_infer.decoding.preprocess import PreprocessSpec, crop_pixels\n"
            "try: crop_pixels(sys.argv[1], PreprocessSpec())\n"
            "except InputError as e: print(e.kind, e.message)")
    out = subprocess.run([sys.executable, "-c", code, str(photo)], env=env, capture_output=True, text=True,
                         check=True, timeout=60)
    assert not marker.exists(), "Ghostscript was run"
    assert out.stdout.startswith("unsupported") and "PostScript" in out.stdout and "EPS" in out.stdout


LIBRARY_ERRORS = [
    pytest.param(NotImplementedError("no such feature"), "unsupported"),
    pytest.param(struct.error("unpack requires a buffer of 4 bytes"), "decode"),
    pytest.param(SyntaxError("not a PNG file"), "decode"),
    pytest.param(IndexError("list index out of range"), "decode"),
    pytest.param(TypeError("unsupported operand"), "decode"),
    pytest.param(KeyError(278), "decode"),
    pytest.param(ValueError("buffer is not large enough"), "decode"),
    pytest.param(ZeroDivisionError("division by zero"), "decode"),
    pytest.param(MemoryError(), "too_large"),
    pytest.param(EOFError(), "decode"),
    pytest.param(OSError("image file is truncated"), "decode"),
    pytest.param(RecursionError("maximum recursion depth exceeded"), "decode"),
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


def _saved(fmt: str, mode: str = "RGB", size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (90, 60, 30)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("data,what,fmt", [
    (POSTSCRIPT, "a PostScript file", "EPS"),
    (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "a PDF document", "PDF"),
    (b"8BPS\x00\x01" + bytes(20), "a Photoshop document", "PSD"),
    (b"\x00\x00\x01\x00\x01\x00\x10\x10" + bytes(40), "a Windows icon", "ICO"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "an SVG drawing",
     "SVG"),
    (b"<!DOCTYPE html>\n<html><body>not a photo</body></html>", "an HTML page", "HTML"),
])
def test_other_formats_are_refused_by_name_whatever_the_file_is_called(tmp_path, data, what, fmt):
    photo = tmp_path / "x.jpg"
    photo.write_bytes(data)
    with pytest.raises(InputError) as e:
        crop_pixels(photo, SPEC)
    assert e.value.kind == "unsupported"
    assert e.value.message.startswith(what) and f"format {fmt} is not accepted (pipeline.formats" in e.value.message


def test_real_files_of_formats_pillow_reads_are_refused_unless_listed():
    ico, pdf = _saved("ICO"), _saved("PDF")
    for data in (ico, pdf):
        with pytest.raises(InputError) as e:
            crop_pixels(data, SPEC)
        assert e.value.kind == "unsupported"
    assert crop_pixels(ico, SPEC, formats=("ICO",)).tensor.shape == (224, 224, 3)
    with pytest.raises(InputError) as e:
        crop_pixels(_saved("JPEG"), SPEC, formats=("PNG",))
    assert e.value.kind == "unsupported" and "a JPEG file: format JPEG is not accepted" in e.value.message


def test_eps_and_unknown_names_are_never_accepted_formats():
    with pytest.raises(ValueError, match="Ghostscript"):
        crop_pixels(POSTSCRIPT, SPEC, formats=("JPEG", "eps"))
    with pytest.raises(ValueError, match="NOPE"):
        crop_pixels(_png(), SPEC, formats=("PNG", "NOPE"))


def test_an_accepted_format_with_a_broken_header_is_a_decode_error_naming_it():
    png = bytearray(_png())
    png[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    for data, message in ((bytes(png), "a PNG file whose header is corrupt"), (b"", "empty file")):
        with pytest.raises(InputError) as e:
            crop_pixels(data, SPEC)
        assert e.value.kind == "decode" and message in e.value.message


def test_what_decoding_would_cost_is_refused_before_decoding(monkeypatch):
    loaded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loaded.append(self))
    data = _saved("PNG", "RGBA", (3000, 2000))  # 24 MB decoded
    with pytest.raises(InputError) as e:
        crop_pixels(data, SPEC, max_decode_mb=16)
    assert e.value.kind == "too_large" and not loaded
    assert "3000x2000 PNG (RGBA) needs ~" in e.value.message and "over pipeline.max_decode_mb (16)" in e.value.message


def test_a_jpegs_estimate_counts_its_draft_size_not_its_full_size():
    data = _saved("JPEG", "RGB", (4000, 3000))  # 48 MB in full, 3 MB at the 1/4 draft scale
    assert crop_pixels(data, SPEC, max_decode_mb=16).tensor.shape == (224, 224, 3)
    with pytest.raises(InputError) as e:
        crop_pixels(data, SPEC, max_decode_mb=16, draft=False)
    assert e.value.kind == "too_large" and "4000x3000 JPEG" in e.value.message


def test_a_progressive_jpeg_counts_its_full_size_coefficients():
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (1, 2, 3)).save(buf, "JPEG", progressive=True)
    with pytest.raises(InputError) as e:  # 4:2:0: 1.5 coefficients of 2 bytes per pixel, 36 MB
        crop_pixels(buf.getvalue(), SPEC, max_decode_mb=32)
    assert e.value.kind == "too_large" and "1000x750 JPEG" in e.value.message


def test_every_image_name_we_list_is_of_an_accepted_format():
    from edge_infer.decoding.decode import DEFAULT_FORMATS
    from edge_infer.decoding.preprocess import IMAGE_EXTENSIONS

    Image.init()
    assert {Image.registered_extensions()[ext] for ext in IMAGE_EXTENSIONS} == set(DEFAULT_FORMATS)


def test_a_multi_picture_jpeg_is_a_jpeg_and_drafted():
    buf = io.BytesIO()
    photo = Image.new("RGB", (4000, 3000), (200, 10, 10))
    photo.save(buf, "MPO", save_all=True, append_images=[photo])  # what phones write with a depth map
    assert Image.open(io.BytesIO(buf.getvalue()), formats=["JPEG"]).format == "MPO"
    p = crop_pixels(buf.getvalue(), SPEC, max_decode_mb=16)  # 48 MB in full: decoded at 1/4 scale
    assert (p.width, p.height) == (4000, 3000) and p.tensor[..., 0].min() > 150
