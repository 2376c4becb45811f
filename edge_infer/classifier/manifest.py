"""The model manifest (``model.json`` beside ``model.onnx``): what the model is and what it expects.

Written by ``export``, read by everything that runs a model. It is the single source of the preprocessing
settings, the labels and the model's identity (sha256) that results and metrics report.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..decoding.preprocess import PreprocessSpec
from ..errors import ModelError

MANIFEST_NAME = "model.json"
MODEL_NAME = "model.onnx"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "name", "precision", "sha256", "input", "output", "preprocess", "labels")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def default_model_path() -> Path:
    """The int8 MobileNetV2 shipped inside the package (package data; no work at import time)."""
    return Path(__file__).resolve().parents[1] / "models" / MODEL_NAME


def manifest_path_for(model_path: str | os.PathLike[str]) -> Path:
    return Path(model_path).resolve().parent / MANIFEST_NAME


@dataclass(frozen=True)
class Manifest:
    """The parts of ``model.json`` the runtime uses; ``raw`` keeps the whole document for ``info``."""

    name: str
    precision: str
    sha256: str
    input_name: str
    input_shape: tuple[Any, ...]
    output_name: str
    preprocess: PreprocessSpec
    labels: tuple[str, ...]
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "manifest") -> "Manifest":
        missing = [k for k in REQUIRED_KEYS if k not in d]
        if missing:
            raise ModelError(f"{where}: missing keys {', '.join(missing)}")
        if d["format_version"] != FORMAT_VERSION:
            raise ModelError(f"{where}: format_version {d['format_version']!r} is not {FORMAT_VERSION}")
        try:
            spec = PreprocessSpec.from_dict(d["preprocess"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{where}: bad preprocess section: {e}") from e
        labels = tuple(str(x) for x in d["labels"])
        return cls(
            name=str(d["name"]),
            precision=str(d["precision"]),
            sha256=str(d["sha256"]),
            input_name=str(d["input"]["name"]),
            input_shape=tuple(d["input"]["shape"]),
            output_name=str(d["output"]["name"]),
            preprocess=spec,
            labels=labels,
            raw=d,
        )

    @property
    def version(self) -> str:
        """The model store's name for this model (``edge-infer models``); "" outside a store."""
        return str(self.raw.get("version", ""))


def load_manifest(model_path: str | os.PathLike[str]) -> Manifest:
    path = manifest_path_for(model_path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise ModelError(f"no manifest {path} beside the model (export writes one)") from e
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read manifest {path}: {e}") from e
    if not isinstance(data, dict):
        raise ModelError(f"manifest {path} is not a JSON object")
    return Manifest.from_dict(data, where=str(path))


def write_manifest(model_path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """Write ``model.json`` atomically beside the model."""
    path = manifest_path_for(model_path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)
    return path
