"""A replacement model's self-test: run it on photos whose classes are known before it serves.

A model that loads can still be the wrong file, a broken re-export or one quantized badly enough to be
useless, and a daemon in a field cabinet has nobody watching when it swaps. So before a reload swaps a
model in, it must classify known photos: finite scores of the right shape always, and the right class for
all but a few of them. Which photos:

- the model's own, when its manifest names a folder of them (``"selftest": "selftest"``, relative to the
  model's folder, with an ``expected.json`` like the package's; ``edge-infer train`` writes one). These are
  held-out images of a trained model, which is not right on all of them: up to a quarter may be missed
  (at least one). A broken or badly quantized model is near chance (one in the number of classes) or
  answers one class for everything, far below three quarters;
- else, for a model with the embedded model's ImageNet labels, the photos shipped in ``models/selftest/``:
  all but at most one right (the embedded model gets all 8);
- else nothing says the model is any good, and it is refused with what to add.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..decoding.preprocess import prepare
from ..errors import InputError, ModelError
from .manifest import default_model_path, load_manifest
from .session import ModelSession

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "models" / "selftest"
ALLOWED_MISSES = 1  # of the embedded photos
OWN_MISS_FRACTION = 0.25  # of a model's own photos (at least ALLOWED_MISSES)
SELFTEST_KEY = "selftest"


def load_expected(folder: Path = SAMPLES_DIR) -> dict[str, int]:
    """Sample file name -> the class index it shows."""
    try:
        with open(folder / "expected.json", encoding="utf-8") as f:
            top1 = json.load(f)["top1"]
        return {str(k): int(v) for k, v in top1.items()}
    except FileNotFoundError as e:
        raise ModelError(f"its self-test folder {folder} has no expected.json") from e
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelError(f"cannot read {folder / 'expected.json'} (want {{\"top1\": {{file: class index}}}}): {e}") from e


def own_samples(candidate: ModelSession) -> Path | None:
    """The folder the manifest's ``selftest`` names, inside the model's folder; None when it names none."""
    value = candidate.manifest.raw.get(SELFTEST_KEY)
    if value is None:
        return None
    base = candidate.path.resolve().parent
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        raise ModelError(f"its manifest's {SELFTEST_KEY!r} must be a folder relative to {base}, got {value!r}")
    folder = (base / value).resolve()
    if not folder.is_relative_to(base):
        raise ModelError(f"its manifest's {SELFTEST_KEY!r} ({value!r}) leads out of the model's folder {base}")
    if not folder.is_dir():
        raise ModelError(f"its self-test folder {folder} (the manifest's {SELFTEST_KEY!r}) does not exist")
    return folder


def _photos(folder: Path, expected: dict[str, int], n_labels: int) -> list[Path]:
    paths = []
    for name, want in expected.items():
        path = (folder / name).resolve()
        if "/" in name or name in ("", ".", "..") or not path.is_relative_to(folder.resolve()):
            raise ModelError(f"{folder / 'expected.json'}: {name!r} is not a file name in {folder}")
        if not 0 <= want < n_labels:
            raise ModelError(f"{folder / 'expected.json'}: class {want} of {name!r} is not one of its {n_labels} labels")
        paths.append(path)
    if not paths:
        raise ModelError(f"{folder / 'expected.json'} names no photos")
    return paths


def choose_samples(candidate: ModelSession) -> tuple[Path, int | None]:
    """The folder to self-test ``candidate`` on and the misses allowed (None: a fraction of the photos)."""
    own = own_samples(candidate)
    if own is not None:
        return own, None
    if candidate.manifest.labels == load_manifest(default_model_path()).labels:
        return SAMPLES_DIR, ALLOWED_MISSES
    raise ModelError(f"it has {len(candidate.manifest.labels)} labels of its own and no self-test photos: put a few "
                     f"photos of its classes in a folder beside it with an expected.json ({{\"top1\": {{file: class "
                     f"index}}}}) and name that folder in its manifest's {SELFTEST_KEY!r} key (edge-infer train does)")


def self_test(candidate: ModelSession, serving: ModelSession) -> str:
    """Raise ``ModelError`` saying why ``candidate`` must not replace ``serving``; else a one-line summary."""
    if candidate.manifest.preprocess != serving.manifest.preprocess:
        # Workers and the tensor pool are built for the serving model's crop; changing that needs a restart.
        raise ModelError(f"its preprocessing {candidate.manifest.preprocess} differs from the serving model's "
                         f"{serving.manifest.preprocess}; restart the daemon to change it")
    folder, allowed = choose_samples(candidate)
    n_labels = len(candidate.manifest.labels)
    expected = load_expected(folder)
    paths = _photos(folder, expected, n_labels)
    if allowed is None:
        allowed = max(ALLOWED_MISSES, int(len(paths) * OWN_MISS_FRACTION))
    try:
        batch = np.stack([prepare(p, candidate.manifest.preprocess).tensor for p in paths])
    except InputError as e:
        raise ModelError(f"cannot read the self-test photos in {folder}: {e}") from e
    try:
        logits = candidate.run(batch)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises untyped errors for models that fail at run time
        raise ModelError(f"it fails to run: {e}") from e
    if logits.shape != (len(expected), n_labels):
        raise ModelError(f"its output has shape {logits.shape}, expected {(len(expected), n_labels)} "
                         f"(one score per label in its manifest)")
    if not np.isfinite(logits).all():
        raise ModelError("its output holds NaN or infinite values")
    top1 = logits.argmax(axis=1)
    wrong = [f"{name} (expected {want}, got {int(got)})"
             for (name, want), got in zip(expected.items(), top1) if int(got) != want]
    where = f"its own in {folder}" if folder != SAMPLES_DIR else "the embedded ones"
    if len(wrong) > allowed:
        raise ModelError(f"it misclassifies {len(wrong)} of {len(expected)} self-test photos ({where}, at most "
                         f"{allowed} allowed): {', '.join(wrong)}")
    return f"top-1 right on {len(expected) - len(wrong)} of {len(expected)} self-test photos ({where})"
