"""Model zoo: one factory, `build_model(name, num_classes, in_shape)`.

The CIFAR ResNets follow the layout of the classic KD benchmarks (RepDistiller/mdistiller):
a 3x3 stem, three stages of basic blocks with (depth - 2) / 6 blocks each, global pooling.
`resnet8x4`/`resnet32x4` use stage widths 64/128/256 after a 32-wide stem (the x4 variants).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdtune.config import ConfigError


class MLP(nn.Module):
    def __init__(self, num_classes: int, in_shape: tuple[int, ...], hidden: int = 64) -> None:
        super().__init__()
        in_features = 1
        for size in in_shape:
            in_features *= size
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class SmallCNN(nn.Module):
    """Two conv blocks and a pooled linear head: a strong teacher for 8x8 digits."""

    def __init__(self, num_classes: int, in_shape: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(in_shape[0], width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(
        self, num_classes: int, in_shape: tuple[int, ...], depth: int, widths: tuple[int, ...]
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        layers: list[nn.Module] = _conv_bn_relu(in_shape[0], widths[0])
        c_in = widths[0]
        for stage, c_out in enumerate(widths[1:]):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _resnet(depth: int, widths: tuple[int, ...]) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
        return CifarResNet(num_classes, in_shape, depth, widths)

    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "resnet8x4": _resnet(8, (32, 64, 128, 256)),
    "resnet32x4": _resnet(32, (32, 64, 128, 256)),
    "resnet20": _resnet(20, (16, 16, 32, 64)),
    "resnet56": _resnet(56, (16, 16, 32, 64)),
}


def build_model(name: str, num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"model: unknown {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_classes, in_shape)
