"""Batched augmentation on the device: no per-sample Python, works on CPU and CUDA alike.

Randomness comes from torch's global generator, which each trial seeds once (and checkpoints).
"""

from __future__ import annotations

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


def mixup(x: Tensor, targets: Tensor, *, alpha: float) -> tuple[Tensor, Tensor]:
    """Mixup with one lambda ~ Beta(alpha, alpha) per sample and a random partner permutation.

    `targets` are class probabilities (N, C); they are mixed with the same lambdas, which makes
    CE on them equal to lambda * CE(y_i) + (1 - lambda) * CE(y_j). alpha = 0 means no mixing.
    """
    if alpha == 0:
        return x, targets
    n = x.shape[0]
    lam = torch.distributions.Beta(alpha, alpha).sample((n,)).to(x.device)
    partner = torch.randperm(n, device=x.device)
    lam_x = lam.view(-1, *([1] * (x.dim() - 1)))
    lam_t = lam.view(-1, 1)
    mixed_x = lam_x * x + (1 - lam_x) * x[partner]
    mixed_targets = lam_t * targets + (1 - lam_t) * targets[partner]
    return mixed_x, mixed_targets
