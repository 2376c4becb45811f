"""Broken and odd files of every accepted format: each is decoded or refused with a typed error, never
an exception of the libraries' own."""
from __future__ import annotations

import collections
import time
import warnings

import pytest
from PIL import Image

from edge_infer.decoding.decode import DEFAULT_FORMATS
from edge_infer.decoding.preprocess import IMAGE_EXTENSIONS, PreprocessSpec, crop_pixels
from edge_infer.errors import InputError
from tests.support.corpus import build_corpus

SPEC = PreprocessSpec()
KINDS = {"decode", "unsupported", "too_large"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"), seed=20240607)


def test_the_corpus_is_a_few_hundred_files_the_same_for_the_same_seed(corpus, tmp_path):
    assert 300 <= len(corpus) <= 1000
    again = build_corpus(tmp_path, seed=20240607)
    assert [p.name for p in again] == [p.name for p in corpus]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(again, corpus))
    extensions = {p.suffix for p in corpus}
    assert extensions <= IMAGE_EXTENSIONS and {".jpg", ".png", ".webp", ".gif", ".bmp", ".tif", ".ppm"} <= extensions


def test_its_valid_files_cover_every_accepted_format_and_all_decode(corpus):
    formats = set()
    for path in (p for p in corpus if p.stem.endswith("-valid")):
        with Image.open(path, formats=DEFAULT_FORMATS) as img:
            formats.add(img.format)
        assert crop_pixels(path, SPEC).tensor.shape == (224, 224, 3), path.name
    assert formats == set(DEFAULT_FORMATS), formats


def test_every_corpus_file_is_decoded_or_refused_with_a_typed_error(corpus, capsys):
    counts: collections.Counter[str] = collections.Counter()
    escaped = []
    t0 = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some corrupt EXIF and MPO headers
        for path in corpus:
            try:
                crop_pixels(path.read_bytes(), SPEC)
                counts["ok"] += 1
            except InputError as e:
                counts[e.kind] += 1
                if e.kind not in KINDS or not e.message:
                    escaped.append(f"{path.name}: InputError({e.kind!r}, {e.message!r})")
            except Exception as e:  # noqa: BLE001 - exactly what this test looks for
                escaped.append(f"{path.name}: {type(e).__name__}: {e}")
    with capsys.disabled():
        print(f"\ncorpus of {len(corpus)} files in {time.monotonic() - t0:.1f} s: "
              + ", ".join(f"{k} {n}" for k, n in sorted(counts.items())))
    assert not escaped, "\n".join(escaped)
    assert counts["ok"] and counts["decode"] and counts["unsupported"] and counts["too_large"]
