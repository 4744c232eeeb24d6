"""Batched augmentation on the device: no per-sample Python, works on CPU and CUDA alike.

Randomness comes from torch's global generator, which each trial seeds once (and checkpoints).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip(x: Tensor, *, padding: int, flip: bool) -> Tensor:
    """Random crop of the original size from a zero-padded batch, then optional horizontal flip."""
    n, _, height, width = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        offset_y = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
        offset_x = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=x.device)
        rows = offset_y + torch.arange(height, device=x.device).view(1, -1, 1)
        cols = offset_x + torch.arange(width, device=x.device).view(1, 1, -1)
        batch = torch.arange(n, device=x.device).view(-1, 1, 1)
        # Advanced indexing gives (N, H, W, C); move channels back.
        x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if flip:
        mirrored = torch.rand(n, device=x.device) < 0.5
        x = torch.where(mirrored.view(-1, 1, 1, 1), x.flip(3), x)
    return x.contiguous()


def mixup(
    x: Tensor, targets: Tensor, *, alpha: float, partial: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Mixup with one lambda ~ Beta(alpha, alpha) per sample and a random partner permutation.

    `targets` are class probabilities (N, C); they are mixed with the same lambdas, which makes
    CE on them equal to lambda * CE(y_i) + (1 - lambda) * CE(y_j). Only a `partial` fraction of
    the samples is mixed (the others keep lambda = 1); alpha = 0 means no mixing.
    """
    if alpha == 0 or partial == 0:
        return x, targets
    n = x.shape[0]
    lam = torch.distributions.Beta(alpha, alpha).sample((n,)).to(x.device)
    if partial < 1:
        lam = torch.where(torch.rand(n, device=x.device) < partial, lam, torch.ones_like(lam))
    partner = torch.randperm(n, device=x.device)
    lam_x = lam.view(-1, *([1] * (x.dim() - 1)))
    lam_t = lam.view(-1, 1)
    mixed_x = lam_x * x + (1 - lam_x) * x[partner]
    mixed_targets = lam_t * targets + (1 - lam_t) * targets[partner]
    return mixed_x, mixed_targets


def derangement(n: int, device: torch.device | str) -> Tensor:
    """A random permutation with no fixed point (every sample gets a different partner)."""
    order = torch.randperm(n, device=device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(1)
    return partner


def cutmix(x: Tensor, *, alpha: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """CutMix with one lambda ~ Beta(alpha, alpha) per batch (the Good-DA-in-KD recipe).

    A box with sides sqrt(1 - lambda) of the image, centred uniformly and clipped at the border,
    is pasted from a partner (a permutation without fixed points); lambda is then recomputed as the
    kept area. Returns the mixed batch, the partner indices and that lambda. Features (N, D) are
    treated as 1-D signals: a contiguous span of (1 - lambda) * D features is pasted.
    """
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = derangement(x.shape[0], x.device)
    spatial = x.shape[2:] if x.dim() == 4 else x.shape[1:]
    cut_ratio = (1.0 - lam) ** (0.5 if len(spatial) == 2 else 1.0)
    bounds = []
    for size in spatial:
        centre = int(torch.randint(0, size, ()))
        half = int(size * cut_ratio) // 2
        bounds.append((max(centre - half, 0), min(centre + half, size)))
    mixed = x.clone()
    box = tuple(slice(lo, hi) for lo, hi in bounds)
    index = (slice(None), slice(None), *box) if x.dim() == 4 else (slice(None), *box)
    mixed[index] = x[partner][index]
    area = 1.0
    for (lo, hi), size in zip(bounds, spatial):
        area *= (hi - lo) / size
    return mixed, partner, torch.tensor(1.0 - area)


def cutout(x: Tensor, *, max_fraction: float = 0.5, fill: Tensor | float = 0) -> Tensor:
    """Per-sample square hole of side v * size, v ~ U(0, max_fraction), filled with `fill`."""
    n, _, height, width = x.shape
    side = (torch.rand(n, device=x.device) * max_fraction * min(height, width)).long()
    cy = torch.randint(0, height, (n,), device=x.device)
    cx = torch.randint(0, width, (n,), device=x.device)
    rows = torch.arange(height, device=x.device).view(1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1)
    top, left = (cy - side // 2).view(-1, 1, 1), (cx - side // 2).view(-1, 1, 1)
    hole = (
        (rows >= top)
        & (rows < top + side.view(-1, 1, 1))
        & (cols >= left)
        & (cols < left + side.view(-1, 1, 1))
    )
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return torch.where(hole.unsqueeze(1), fill.expand_as(x), x)


def strong_view(x: Tensor, *, fill: Tensor | float = 0, groups: int = 8) -> Tensor:
    """CRLD's strong view of a uint8 batch (already cropped and flipped): RandAugment(2 ops),
    then Cutout. torchvision applies one random draw per call, so the batch is split into
    `groups` slices that each get their own two operations."""
    from torchvision.transforms import v2

    rand_augment = v2.RandAugment(num_ops=2)
    slices = [rand_augment(chunk) for chunk in x.chunk(groups)]
    return cutout(torch.cat(slices), max_fraction=0.5, fill=fill)


def noisy_view(x: Tensor, *, noise: float = 0.5, drop: float = 0.2) -> Tensor:
    """The strong view for non-image features (e.g. the Gaussian mixture): there are no image
    operations to apply, so Gaussian noise of `noise` std is added and a `drop` fraction of
    features is zeroed."""
    keep = (torch.rand_like(x) >= drop).to(x.dtype)
    return (x + noise * torch.randn_like(x)) * keep


def _batch_mixup(x: Tensor) -> Tensor:
    """Mixup as Good-DA-in-KD uses it: one lambda ~ Beta(1, 1) for the whole batch."""
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    return lam * x + (1 - lam) * x[torch.randperm(len(x), device=x.device)]


# The extra augmented copy x' of a (normalised, crop+flipped) batch, by name, as compared in
# Good-DA-in-KD; `cutmixpick` needs a scorer (logits of the model whose entropy picks).
AUGMENTATIONS: dict[str, Callable[..., Tensor]] = {
    "identity": lambda x, scorer=None: x,
    "flip": lambda x, scorer=None: x.flip(3) if x.dim() == 4 else x,
    "crop_flip": lambda x, scorer=None: (
        crop_flip(x, padding=max(1, x.shape[-1] // 8), flip=True) if x.dim() == 4 else x
    ),
    "cutout": lambda x, scorer=None: (
        cutout(x, max_fraction=0.5) if x.dim() == 4 else noisy_view(x, noise=0)
    ),
    "mixup": lambda x, scorer=None: _batch_mixup(x),
    "cutmix": lambda x, scorer=None: cutmix(x)[0],
    "cutmixpick": lambda x, scorer: _pick_cutmix(x, scorer),
}


def entropy(logits: Tensor) -> Tensor:
    """Entropy of each row's softmax at T = 1."""
    log_p = logits.float().log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def cutmix_pool(x: Tensor) -> Tensor:
    """CutMixPick's candidates: the batch CutMixed twice (2N images)."""
    return torch.cat([cutmix(x)[0], cutmix(x)[0]])


def _pick_cutmix(x: Tensor, scorer: Callable[[Tensor], Tensor]) -> Tensor:
    """CutMixPick: the most uncertain half (by `scorer`'s entropy) of a 2x CutMix pool."""
    pool = cutmix_pool(x)
    return pool[entropy(scorer(pool)).topk(len(x)).indices]
