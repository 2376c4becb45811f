import io

import numpy as np
import pytest
from PIL import Image

from edge_infer.decoding.preprocess import PreprocessSpec, normalise, open_image, prepare, resize_crop, to_rgb
from edge_infer.errors import InputError

SPEC = PreprocessSpec()


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("size,resized", [((500, 375), (341, 256)), ((375, 500), (256, 341)), ((256, 256), (256, 256)), ((500, 300), (426, 256))])
def test_resize_and_centre_crop_match_torchvision(size, resized):
    # Each pixel holds its own coordinates; nearest-neighbour resizing lets us read back which source
    # pixel landed at the crop's corners. torchvision: short side -> 256, long -> int(256 * long / short),
    # crop offset round((n - 224) / 2).
    w, h = size
    coords = np.add.outer(np.arange(h) * 10000, np.arange(w)).astype(np.int32)
    out = np.asarray(resize_crop(Image.fromarray(coords, "I"), PreprocessSpec(interpolation="nearest")))
    assert out.shape == (224, 224)
    rw, rh = resized
    left, top = round((rw - 224) / 2), round((rh - 224) / 2)
    for dy, dx in [(0, 0), (223, 223)]:
        src_x, src_y = int((left + dx + 0.5) * w / rw), int((top + dy + 0.5) * h / rh)
        assert out[dy, dx] == src_y * 10000 + src_x


def test_normalise_matches_the_textbook_formula():
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    got = normalise(Image.fromarray(pixels), SPEC)
    want = ((pixels / 255.0 - np.array(SPEC.mean)) / np.array(SPEC.std)).transpose(2, 0, 1)
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_normalise_writes_into_a_batch_slot():
    batch = np.zeros((2, 3, 224, 224), np.float32)
    normalise(Image.new("RGB", (224, 224), (255, 0, 0)), SPEC, out=batch[1])
    assert batch[0].max() == 0 and batch[1, 0].min() > 2  # red channel: (1 - 0.485) / 0.229


def test_exif_rotated_photo_is_classified_upright():
    upright = Image.new("RGB", (20, 40), (255, 0, 0))
    upright.paste((0, 0, 255), (0, 20, 20, 40))  # red top, blue bottom
    stored = upright.rotate(90, expand=True)  # what a sideways camera writes
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = encode(stored, "JPEG", exif=exif.tobytes(), quality=95)
    img = to_rgb(open_image(data))
    assert img.size == (20, 40)
    top, bottom = np.asarray(img)[5, 10], np.asarray(img)[35, 10]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16", "1"])
def test_every_common_mode_becomes_rgb(mode):
    img = Image.new("RGB", (64, 48), (200, 100, 50)).convert(mode) if mode != "I;16" else \
        Image.fromarray(np.full((48, 64), 40000, np.uint16))
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    prepared = prepare(encode(img, fmt), SPEC)
    assert prepared.tensor.shape == (3, 224, 224) and (prepared.width, prepared.height) == (64, 48)
    assert np.isfinite(prepared.tensor).all()


def test_sixteen_bit_uses_the_full_range_instead_of_clipping():
    dark = prepare(encode(Image.fromarray(np.full((32, 32), 10000, np.uint16)), "TIFF"), SPEC).tensor
    bright = prepare(encode(Image.fromarray(np.full((32, 32), 60000, np.uint16)), "TIFF"), SPEC).tensor
    assert bright.mean() > dark.mean() + 1


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    white = prepare(encode(rgba), SPEC).tensor
    np.testing.assert_allclose(white[0], (1 - 0.485) / 0.229, atol=1e-4)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    t = prepare(buf.getvalue(), SPEC).tensor
    assert t[0].mean() > t[2].mean()  # red, not blue


@pytest.mark.parametrize("data,kind", [
    (b"", "decode"),
    (b"not an image at all\n", "decode"),
    (encode(Image.new("RGB", (300, 300), (10, 20, 30)), "JPEG")[:400], "decode"),
])
def test_broken_inputs_raise_typed_errors(data, kind):
    with pytest.raises(InputError) as e:
        prepare(data, SPEC)
    assert e.value.kind == kind and e.value.message


def test_pixel_limit_refuses_decompression_bombs_before_decoding():
    data = encode(Image.new("L", (4000, 4000)), "PNG")
    with pytest.raises(InputError) as e:
        prepare(data, SPEC, max_pixels=1_000_000)
    assert e.value.kind == "too_large"


def test_missing_file_is_an_io_error(tmp_path):
    with pytest.raises(InputError) as e:
        prepare(tmp_path / "gone.jpg", SPEC)
    assert e.value.kind == "io"


def test_spec_round_trips_through_the_manifest_dict():
    assert PreprocessSpec.from_dict(SPEC.to_dict()) == SPEC
    with pytest.raises(ValueError):
        PreprocessSpec(crop=300, resize=256)


def _big_jpeg(exif_orientation: int | None = None) -> bytes:
    rng = np.random.default_rng(5)
    small = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    big = small.resize((2000, 1500), Image.Resampling.BICUBIC)
    kw = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kw["exif"] = exif.tobytes()
    return encode(big, "JPEG", quality=92, **kw)


def test_large_jpegs_decode_in_draft_mode_with_nearly_the_same_pixels():
    data = _big_jpeg()
    img = open_image(data, draft_short=512)
    assert img.size == (1000, 750) and img.info["full_size"] == (2000, 1500)  # 1/2 scale: short side >= 512
    fast, full = prepare(data, SPEC), prepare(data, SPEC, draft=False)
    assert (fast.width, fast.height) == (full.width, full.height) == (2000, 1500)  # the stored size
    assert np.abs(fast.tensor - full.tensor).mean() < 0.05  # in normalised units; one 8-bit step is ~0.017


def test_draft_reports_the_upright_size_of_a_sideways_photo():
    p = prepare(_big_jpeg(exif_orientation=6), SPEC)
    assert (p.width, p.height) == (1500, 2000)


def test_small_jpegs_are_decoded_in_full():
    data = encode(Image.new("RGB", (500, 375), (9, 9, 9)), "JPEG")
    assert open_image(data, draft_short=512).size == (500, 375)
