"""MobileNetV2 (Sandler et al., 2018) with torchvision's exact module layout.

torchvision is the reference implementation, but PyPI's torchvision does not import beside every torch
build (it needs matching compiled ops), and a device exporting a model should not need it. This module
reproduces torchvision's ``mobilenet_v2`` so that its state-dict keys, shapes and numerics are the same:
a checkpoint saved from one loads with ``strict=True`` into the other.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the paper.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MIN_WIDTH_MULT = 0.35
MAX_WIDTH_MULT = 1.4


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (torchvision's rule)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class ConvBNReLU(nn.Sequential):
    """Conv2d -> BatchNorm2d -> ReLU6; a Sequential so its children are keyed 0, 1, 2 like torchvision's."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear bottleneck projection (1x1), residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_ch, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            # Linear bottleneck: no ReLU after the projection, it would destroy information in low dims.
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision-compatible MobileNetV2 with a width multiplier in [0.35, 1.4]."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        if not MIN_WIDTH_MULT <= width_mult <= MAX_WIDTH_MULT:
            raise ValueError(f"width_mult must be in [{MIN_WIDTH_MULT}, {MAX_WIDTH_MULT}], got {width_mult}")
        input_channel = make_divisible(32 * width_mult)
        # The paper keeps the last layer at 1280 for multipliers below 1: it matters for accuracy.
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(3, input_channel, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
        features.append(ConvBNReLU(input_channel, self.last_channel, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation, so random-weight test networks behave like untrained torchvision ones.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


def build_mobilenet_v2(width_mult: float = 1.0, num_classes: int = 1000) -> tuple[nn.Module, str]:
    """torchvision's network when it imports, else ours; returns (model, which implementation)."""
    try:
        from torchvision.models import mobilenet_v2  # type: ignore[import-not-found]
    except Exception:  # noqa: BLE001 - a broken torchvision raises RuntimeError/OSError, not ImportError
        return MobileNetV2(num_classes=num_classes, width_mult=width_mult), "edge_infer"
    model: Any = mobilenet_v2(weights=None, width_mult=width_mult, num_classes=num_classes)
    return model, "torchvision"
