"""Model zoo: one factory, `build_model(name, num_classes, in_shape)`, and `load_weights` for
the published CIFAR-100 teachers.

Beside two small digits models (MLP, SmallCNN), the zoo is the CIFAR-100 KD benchmark's, as
mdistiller (megvii-research/mdistiller, mdistiller/models/cifar/) and RepDistiller
(HobbitLong/RepDistiller, models/) define it, under the names of mdistiller's
`cifar_model_dict`. Module names follow theirs, so `model.state_dict()` has exactly the keys and
shapes of their checkpoints (`cifar_teachers.tar`) and those load into kdtune's models.

Two departures, neither of which changes a weight or a 32x32 output: the models return logits
only (no feature dicts), and their final pooling is adaptive, which on 32x32 inputs is the
official fixed-size pooling and also lets 8x8 digits through; the first convolution takes
`in_shape[0]` channels (3 for CIFAR, 1 for digits).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
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


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU()]


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


def _pool(x: Tensor) -> Tensor:
    """Global average pooling to one vector per sample."""
    return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _conv3x3(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride=stride, groups=groups, bias=False)


def _shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: channel g * k + i moves to i * groups + g."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


# --- ResNet (mdistiller resnet.py) ----------------------------------------------------------


class BasicBlock(nn.Module):
    """The post-activation basic block of mdistiller's resnet.py (`BasicBlock`)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Sequential | None = None  # None keeps its keys out, as upstream
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(_conv1x1(c_in, c_out, stride), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(out)) + residual)


class CifarResNet(nn.Module):
    """mdistiller's resnet.py `ResNet` with basic blocks: a 3x3 stem, three stages of
    (depth - 2) / 6 blocks (the second and third halve the resolution), pooling, `fc`.

    With 100 classes: resnet20 278,324 parameters, resnet32 472,756, resnet56 861,620,
    resnet110 1,736,564 (stem 16, stages 16/32/64); resnet8x4 1,233,540 and resnet32x4
    7,433,860 (stem 32, stages 64/128/256).
    """

    def __init__(
        self, num_classes: int, in_shape: tuple[int, ...], depth: int, widths: tuple[int, ...]
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = _conv3x3(in_shape[0], widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._stage(widths[0], widths[1], blocks, stride=1)
        self.layer2 = self._stage(widths[1], widths[2], blocks, stride=2)
        self.layer3 = self._stage(widths[2], widths[3], blocks, stride=2)
        self.fc = nn.Linear(widths[3], num_classes)

    @staticmethod
    def _stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
        rest = (BasicBlock(c_out, c_out, 1) for _ in range(1, blocks))
        return nn.Sequential(BasicBlock(c_in, c_out, stride), *rest)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.fc(_pool(self.layer3(self.layer2(self.layer1(x)))))


# --- Wide ResNet (mdistiller wrn.py) ---------------------------------------------------------


class WideBlock(nn.Module):
    """The pre-activation block of mdistiller's wrn.py (`BasicBlock`, no dropout)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv3x3(c_out, c_out)
        self.equal_in_out = c_in == c_out
        # upstream's camelCase attribute: it is the checkpoints' key name
        self.convShortcut = None if self.equal_in_out else _conv1x1(c_in, c_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(activated))))
        # a widening block's shortcut sees the activated input, an identity one the raw input
        if self.convShortcut is None:
            return x + out
        return self.convShortcut(activated) + out


class WideStage(nn.Module):
    """mdistiller's `NetworkBlock`: only a wrapper, kept for its `layer.` in the key names."""

    def __init__(self, c_in: int, c_out: int, blocks: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            WideBlock(c_in, c_out, stride), *(WideBlock(c_out, c_out, 1) for _ in range(1, blocks))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """mdistiller's wrn.py `WideResNet`: WRN-depth-k, (depth - 4) / 6 blocks per stage, stage
    widths 16k/32k/64k after a 16-wide stem, a final BN-ReLU before pooling.

    With 100 classes: wrn_16_2 703,284 parameters, wrn_40_1 569,780, wrn_40_2 2,255,156.
    """

    def __init__(
        self, num_classes: int, in_shape: tuple[int, ...], depth: int, widen_factor: int
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = _conv3x3(in_shape[0], widths[0])
        self.block1 = WideStage(widths[0], widths[1], blocks, stride=1)
        self.block2 = WideStage(widths[1], widths[2], blocks, stride=2)
        self.block3 = WideStage(widths[2], widths[3], blocks, stride=2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(_pool(F.relu(self.bn1(x))))


# --- VGG with batch norm (mdistiller vgg.py) ------------------------------------------------

_VGG_STAGES = {
    8: ((64,), (128,), (256,), (512,), (512,)),  # upstream cfg "S"
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),  # cfg "B"
}


class VGG(nn.Module):
    """mdistiller's vgg.py `VGG` with batch norm (`vgg8_bn`, `vgg13_bn`): five conv stages
    `block0`..`block4` (biased 3x3 convs, BN, ReLU; each stage ends at its last BN), 2x2
    max-pooling after the first three, global average pooling, `classifier`.

    With 100 classes: vgg8 3,965,028 parameters, vgg13 9,462,180.
    """

    def __init__(
        self, num_classes: int, in_shape: tuple[int, ...], depth: int, name: str = "vgg"
    ) -> None:
        super().__init__()
        if min(in_shape[1:]) < 8:  # three 2x2 max-pools must leave at least one pixel
            raise ConfigError(f"model {name!r} needs images of at least 8x8 pixels; the data's "
                              f"input shape is {tuple(in_shape)}")  # fmt: skip
        stages = _VGG_STAGES[depth]
        c_in = in_shape[0]
        blocks = []
        for widths in stages:
            blocks.append(self._stage(c_in, widths))
            c_in = widths[-1]
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.classifier = nn.Linear(c_in, num_classes)

    @staticmethod
    def _stage(c_in: int, widths: tuple[int, ...]) -> nn.Sequential:
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            c_in = width
        # upstream drops the stage's last ReLU (its feature-distillation hooks want the
        # pre-activation), which keeps the Sequential's indices, hence the key names, as they are
        return nn.Sequential(*layers[:-1])

    def forward(self, x: Tensor) -> Tensor:
        side = x.shape[2]
        x = F.max_pool2d(F.relu(self.block0(x)), 2)
        x = F.max_pool2d(F.relu(self.block1(x)), 2)
        x = F.max_pool2d(F.relu(self.block2(x)), 2)
        x = F.relu(self.block3(x))
        if side == 64:  # upstream pools once more on 64x64 (Tiny-ImageNet) inputs only
            x = F.max_pool2d(x, 2)
        return self.classifier(_pool(F.relu(self.block4(x))))


# --- MobileNetV2 (mdistiller mobilenetv2.py) ------------------------------------------------

_MOBILENET_STAGES = (  # expansion (None: the model's), width, blocks, first stride
    (1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
    (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1),
)  # fmt: skip


class InvertedResidual(nn.Module):
    """mdistiller's `InvertedResidual`: 1x1 expansion (present even at expansion 1, unlike
    torchvision's), 3x3 depthwise, linear 1x1 projection, all in one Sequential `conv`."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            _conv1x1(c_in, hidden), nn.BatchNorm2d(hidden), nn.ReLU(),
            _conv3x3(hidden, hidden, stride, groups=hidden), nn.BatchNorm2d(hidden), nn.ReLU(),
            _conv1x1(hidden, c_out), nn.BatchNorm2d(c_out),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """mdistiller's mobilenetv2.py `mobile_half`, the benchmark's "MobileNetV2" student:
    expansion 6, width multiplier 0.5 (stem 16, stages 8/12/16/32/48/80/160), a 1280-wide 1x1
    head conv, `classifier`.

    With 100 classes: 812,836 parameters.
    """

    def __init__(
        self, num_classes: int, in_shape: tuple[int, ...], expansion: int = 6, width: float = 0.5
    ) -> None:
        super().__init__()
        c_in = int(32 * width)
        self.conv1 = nn.Sequential(*_conv_bn_relu(in_shape[0], c_in, 3, stride=2))
        stages = []
        for t, c, n, s in _MOBILENET_STAGES:
            c_out = int(c * width)
            blocks = []
            for i in range(n):
                blocks.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t or expansion))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(stages)
        last = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = nn.Sequential(*_conv_bn_relu(c_in, last, 1))
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))  # upstream's `classifier.0`

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return self.classifier(_pool(self.conv2(x)))


# --- ShuffleNet V1 (mdistiller ShuffleNetv1.py) ---------------------------------------------


class ShuffleV1Block(nn.Module):
    """mdistiller's ShuffleNetv1.py `Bottleneck`: grouped 1x1, shuffle, 3x3 depthwise, grouped
    1x1; a stride-2 block concatenates a 3x3 average-pooled shortcut instead of adding it."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = c_out // 4
        # upstream keeps the first 1x1 ungrouped on the 24-channel stem output
        self.first_groups = 1 if c_in == 24 else groups
        self.stride = stride
        self.conv1 = _conv1x1(c_in, mid, groups=self.first_groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = _conv3x3(mid, mid, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = _conv1x1(mid, c_out, groups=groups)
        self.bn3 = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        out = _shuffle(F.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    """mdistiller's ShuffleNetv1.py `ShuffleV1`: 1x1 stem to 24 channels, stages of 4/8/4
    blocks at 240/480/960 channels, 3 groups, `linear`.

    With 100 classes: 949,258 parameters.
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        groups, widths, depths = 3, (240, 480, 960), (4, 8, 4)
        self.conv1 = _conv1x1(in_shape[0], 24)
        self.bn1 = nn.BatchNorm2d(24)
        c_in = 24
        stages = []
        for width, depth in zip(widths, depths):
            # the first block's output is concatenated with its input, so it adds the rest
            blocks = [ShuffleV1Block(c_in, width - c_in, 2, groups)]
            blocks += [ShuffleV1Block(width, width, 1, groups) for _ in range(1, depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.linear(_pool(self.layer3(self.layer2(self.layer1(x)))))


# --- ShuffleNet V2 (mdistiller ShuffleNetv2.py) ---------------------------------------------


class ShuffleV2Block(nn.Module):
    """mdistiller's ShuffleNetv2.py `BasicBlock`: half the channels pass, the other half go
    through 1x1, 3x3 depthwise, 1x1; concatenated and shuffled in 2 groups."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = _conv1x1(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, half, groups=half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = _conv1x1(half, half)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        half = x.shape[1] // 2
        kept, changed = x[:, :half], x[:, half:]
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(changed)))))
        out = F.relu(self.bn3(self.conv3(out)))
        return _shuffle(torch.cat([kept, out], 1), 2)


class ShuffleV2Down(nn.Module):
    """mdistiller's ShuffleNetv2.py `DownBlock`: two stride-2 branches (depthwise then 1x1;
    1x1, depthwise, 1x1), each giving half the output channels, concatenated and shuffled."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_out // 2
        self.conv1 = _conv3x3(c_in, c_in, 2, groups=c_in)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv2 = _conv1x1(c_in, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = _conv1x1(c_in, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _conv3x3(mid, mid, 2, groups=mid)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = _conv1x1(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return _shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    """mdistiller's ShuffleNetv2.py `ShuffleV2` (net_size 1): 1x1 stem to 24 channels, stages
    of a down block plus 3/7/3 blocks at 116/232/464 channels, 1x1 conv to 1024, `linear`.

    With 100 classes: 1,355,528 parameters.
    """

    def __init__(self, num_classes: int, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        widths, depths, last = (116, 232, 464), (3, 7, 3), 1024
        self.conv1 = _conv1x1(in_shape[0], 24)
        self.bn1 = nn.BatchNorm2d(24)
        c_in = 24
        stages = []
        for width, depth in zip(widths, depths):
            blocks = [ShuffleV2Down(c_in, width), *(ShuffleV2Block(width) for _ in range(depth))]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = _conv1x1(c_in, last)
        self.bn2 = nn.BatchNorm2d(last)
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(_pool(F.relu(self.bn2(self.conv2(x)))))


# --- the registry ----------------------------------------------------------------------------


def _resnet(depth: int, widths: tuple[int, ...]) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
        return CifarResNet(num_classes, in_shape, depth, widths)

    return build


def _wrn(depth: int, widen_factor: int) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
        return WideResNet(num_classes, in_shape, depth, widen_factor)

    return build


def _vgg(depth: int) -> Callable[..., nn.Module]:
    def build(num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
        return VGG(num_classes, in_shape, depth, name=f"vgg{depth}")

    return build


_THIN = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)  # the "x4" variants

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "cnn": SmallCNN,
    # names as mdistiller's cifar_model_dict
    "resnet8x4": _resnet(8, _WIDE),
    "resnet32x4": _resnet(32, _WIDE),
    "resnet20": _resnet(20, _THIN),
    "resnet32": _resnet(32, _THIN),
    "resnet56": _resnet(56, _THIN),
    "resnet110": _resnet(110, _THIN),
    "wrn_16_2": _wrn(16, 2),
    "wrn_40_1": _wrn(40, 1),
    "wrn_40_2": _wrn(40, 2),
    "vgg8": _vgg(8),
    "vgg13": _vgg(13),
    "MobileNetV2": MobileNetV2,
    "ShuffleV1": ShuffleNetV1,
    "ShuffleV2": ShuffleNetV2,
}


def build_model(name: str, num_classes: int, in_shape: tuple[int, ...]) -> nn.Module:
    if name not in MODELS:
        raise ConfigError(f"model: unknown {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](num_classes, in_shape)


# --- checkpoints -----------------------------------------------------------------------------


def sha256_of(path: str | Path) -> str:
    """The file's SHA-256, hex: to pin a downloaded teacher to the published file."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def load_file(path: str | Path, advice: str) -> Any:
    """What a checkpoint file holds, loaded with weights_only (a file from the web must never
    run code while it loads), or one ConfigError that names it and ends with `advice`, never
    torch's hint to load it with weights_only off."""
    try:
        with warnings.catch_warnings():  # torch's, about the file it is about to refuse
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unreadable, truncated, or pickled code
        raise ConfigError(f"teacher checkpoint {path} cannot be read "
                          f"({type(error).__name__}): {advice}") from None  # fmt: skip


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a checkpoint file: a bare one, the "model" entry of mdistiller's and
    RepDistiller's (`{"model", "best_acc", "epoch", "optimizer"}`) or the "state_dict" entry of
    kdtune's teacher cache; a DataParallel save's "module." prefix removed."""
    if not Path(path).exists():
        raise ConfigError(f"teacher checkpoint {path} does not exist")
    if not Path(path).is_file():
        kind = "a folder" if Path(path).is_dir() else "not a regular file (a pipe or a device?)"
        raise ConfigError(f"teacher checkpoint {path} is {kind}; give the checkpoint file "
                          "itself")  # fmt: skip
    saved = load_file(path, "it is not a PyTorch checkpoint of weights, or it is corrupt")
    if isinstance(saved, Mapping):
        for entry in ("model", "state_dict"):
            if isinstance(saved.get(entry), Mapping):
                saved = saved[entry]
                break
    if not isinstance(saved, Mapping) or not saved or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in saved.items()
    ):  # fmt: skip
        found = sorted(map(str, saved))[:5] if isinstance(saved, Mapping) else type(saved).__name__
        raise ConfigError(f"teacher checkpoint {path} holds no state dict (tensors by name, or "
                          f"a 'model' entry of them); found {found}")  # fmt: skip
    broken = [key for key, value in saved.items()
              if value.is_floating_point() and not bool(torch.isfinite(value).all())]  # fmt: skip
    if broken:
        raise ConfigError(f"teacher checkpoint {path}: the teacher's weights are not finite (NaN "
                          f"or inf in {len(broken)} tensors, first {broken[0]!r}); give the file "
                          "of a teacher that trained without diverging")  # fmt: skip
    if all(key.startswith("module.") for key in saved):
        return {key.removeprefix("module."): value for key, value in saved.items()}
    return dict(saved)


def load_weights(model: nn.Module, path: str | Path, name: str) -> None:
    """Load a checkpoint file (see `read_state_dict`) into `model`, the architecture `name`; a
    file that does not fit is one ConfigError line naming the first key that differs."""
    state = read_state_dict(path)
    mismatch = first_mismatch(model.state_dict(), state, name)
    if mismatch:
        raise ConfigError(f"teacher checkpoint {path} does not fit {name}: {mismatch}")
    model.load_state_dict(state, strict=False)  # strictness checked above, batch counts aside


def first_mismatch(expected: Mapping[str, Tensor], found: Mapping[str, Any], name: str) -> str:
    """The first key in which a state dict differs from the model `name`'s: missing, unexpected
    or of another shape; "" if they fit."""
    for key, value in expected.items():
        if key not in found:
            # checkpoints from before PyTorch 0.4.1 have no batch counter; BatchNorm fills it
            if key.endswith("num_batches_tracked"):
                continue
            return f"missing key {key!r}"
        if not isinstance(found[key], Tensor) or found[key].shape != value.shape:
            has = tuple(found[key].shape) if isinstance(found[key], Tensor) else "not a tensor"
            return f"shape of {key} is {has} in the file, {tuple(value.shape)} in {name}"
    extra = next((key for key in found if key not in expected), None)
    return f"unexpected key {extra!r}" if extra else ""
