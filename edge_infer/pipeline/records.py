"""The result and error objects of the contract (one JSON object per input)."""
from __future__ import annotations

import datetime as dt
from typing import Any

from ..errors import InputError


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_ref(name: str, sha256: str, precision: str) -> dict[str, str]:
    return {"name": name, "sha256": sha256, "precision": precision}


def _filed(record: dict[str, Any], stored_as: str | None) -> dict[str, Any]:
    """``stored_as`` (folder sources): the name the record and the input are filed under, right after
    ``input``: the same, unless that name was taken by other bytes (sinks/filing.py)."""
    if stored_as is None:
        return record
    items = list(record.items())
    return dict(items[:2] + [("stored_as", stored_as)] + items[2:])


def ok_result(source: str, input_name: str, input_sha256: str, predictions: list[dict[str, Any]],
              model: dict[str, str], width: int, height: int, timings_ms: dict[str, float],
              stored_as: str | None = None) -> dict[str, Any]:
    return _filed({
        "source": source, "input": input_name, "input_sha256": input_sha256, "status": "ok",
        "predictions": predictions, "model": model, "image": {"width": width, "height": height},
        "timings_ms": {k: round(v, 3) for k, v in timings_ms.items()}, "finished_at": utc_now(),
    }, stored_as)


def error_result(source: str, input_name: str, input_sha256: str | None, error: InputError,
                 model: dict[str, str], stored_as: str | None = None) -> dict[str, Any]:
    return _filed({
        "source": source, "input": input_name, "input_sha256": input_sha256, "status": "failed",
        "error": {"kind": error.kind, "message": error.message}, "model": model, "finished_at": utc_now(),
    }, stored_as)


def frame_result(result: dict[str, Any], frame: dict[str, Any]) -> dict[str, Any]:
    """A camera frame's result: ``frame`` (timestamp, seq) in place of ``input_sha256``."""
    out = {k: v for k, v in result.items() if k != "input_sha256"}
    out["frame"] = frame
    return out
