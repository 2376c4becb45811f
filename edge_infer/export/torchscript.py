"""Optional outputs for PyTorch Mobile users: a traced fp32 TorchScript and its root operator list."""
from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import ExportError


def write_torchscript(model, crop: int, script_path: Path | None, ops_path: Path | None) -> None:  # type: ignore[no-untyped-def]
    import torch
    import yaml

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream, still what mobile builds read
        traced = torch.jit.trace(model, torch.zeros(1, 3, crop, crop))
        ops = sorted(torch.jit.export_opnames(traced))
    try:
        if script_path is not None:
            script_path.parent.mkdir(parents=True, exist_ok=True)
            traced.save(str(script_path))
        if ops_path is not None:
            ops_path.parent.mkdir(parents=True, exist_ok=True)
            # The format of PyTorch's selective build (`SELECTED_OP_LIST`): a YAML list of root operators.
            ops_path.write_text(yaml.safe_dump(ops, default_flow_style=False), encoding="utf-8")
    except OSError as e:
        raise ExportError(f"cannot write TorchScript outputs: {e}") from e
