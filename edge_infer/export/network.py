"""Build the torch network and load its weights, with errors that name the file and the problem."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ExportError
from .mobilenet import build_mobilenet_v2

log = logging.getLogger(__name__)
TORCHVISION = "torchvision"


def load_network(weights: str, width_mult: float = 1.0, num_classes: int = 1000):  # type: ignore[no-untyped-def]
    """(model in eval mode, implementation name, weights sha256 or None for a download)."""
    try:
        model, impl = build_mobilenet_v2(width_mult=width_mult, num_classes=num_classes)
    except ValueError as e:
        raise ExportError(f"--width-mult: {e}") from e
    if weights == TORCHVISION:
        state, digest = _torchvision_weights(impl, width_mult)
    else:
        state, digest = _file_weights(Path(weights))
    if not isinstance(state, dict):
        raise ExportError(f"weights {weights}: expected a state dict, found {type(state).__name__}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ExportError(
            f"weights {weights} do not fit MobileNetV2 (width {width_mult}): "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise ExportError(f"weights {weights}: {len(wrong)} tensors have the wrong shape, e.g. {k} "
                          f"{tuple(state[k].shape)} where width {width_mult} needs {tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, impl, digest


def _file_weights(path: Path):  # type: ignore[no-untyped-def]
    import torch

    from ..classifier.manifest import sha256_file

    if not path.is_file():
        raise ExportError(f"weights file {path} does not exist (pass --weights PATH to a state dict)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises pickle, zip and runtime errors for bad files
        raise ExportError(f"weights file {path} is not a loadable torch state dict: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a common checkpoint wrapping
    return state, sha256_file(path)


def _torchvision_weights(impl: str, width_mult: float):  # type: ignore[no-untyped-def]
    if impl != "torchvision":
        raise ExportError("--weights torchvision needs an importable torchvision; "
                          "pass --weights PATH to a MobileNetV2 state dict instead")
    if width_mult != 1.0:
        raise ExportError("torchvision publishes ImageNet weights for width 1.0 only; pass --weights PATH")
    from torchvision.models import MobileNet_V2_Weights  # type: ignore[import-not-found]

    try:
        state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as e:  # noqa: BLE001 - urllib/socket errors when offline
        raise ExportError(f"cannot download torchvision's IMAGENET1K_V1 weights ({e}); "
                          "offline, pass --weights PATH to a state dict file") from e
    return state, None
