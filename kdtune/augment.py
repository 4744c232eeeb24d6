"""Batched augmentation on the device: no per-sample Python, works on CPU and CUDA alike.

Randomness comes from torch's global generator, which each trial seeds once (and checkpoints).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Scorer = Callable[[Tensor], Tensor]  # inputs -> logits, whose entropy CutMixPick ranks by
Normalize = Callable[[Tensor], Tensor]  # uint8 images -> the normalised floats a batch holds


def crop_flip(x: Tensor, *, padding: int, flip: bool) -> Tensor:
    """Random crop of the original size from a zero-padded batch, then optional horizontal flip,
    each drawn per image (the default training augmentation)."""
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
    """A uniformly random permutation with no fixed point (every sample gets a different
    partner): permutations are drawn until one has none, as Good-DA-in-KD's CutMix does (about
    e = 2.7 draws on average)."""
    if n < 2:
        raise ValueError(f"a derangement needs at least 2 elements, got {n}")
    identity = torch.arange(n, device=device)
    while True:
        partner = torch.randperm(n, device=device)
        if not (partner == identity).any():
            return partner


def cutmix(x: Tensor, *, alpha: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """CutMix with one lambda ~ Beta(alpha, alpha) per batch (the Good-DA-in-KD recipe).

    A box with sides int(size * sqrt(1 - lambda)), centred uniformly and clipped at the border,
    is pasted from a partner (a permutation without fixed points); lambda is then recomputed as
    the kept area. Returns the mixed batch, the partner indices and that lambda. Features (N, D)
    are treated as 1-D signals: a contiguous span of (1 - lambda) * D features is pasted.
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


def cutout(x: Tensor, *, length: int) -> Tensor:
    """Good-DA-in-KD's Cutout of a normalised batch: one hole of `length` x `length` pixels for
    the whole batch, centred uniformly on a pixel and clipped at the border, set to 0 (the
    dataset's mean pixel once normalised)."""
    _, _, height, width = x.shape
    cy, cx = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
    half = length // 2
    keep = torch.ones(height, width, dtype=x.dtype, device=x.device)
    keep[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = 0
    return x * keep


def noisy_view(x: Tensor, *, noise: float = 0.5, drop: float = 0.2) -> Tensor:
    """The strong view for non-image features (e.g. the Gaussian mixture): there are no image
    operations to apply, so Gaussian noise of `noise` std is added and a `drop` fraction of
    features is zeroed."""
    keep = (torch.rand_like(x) >= drop).to(x.dtype)
    return (x + noise * torch.randn_like(x)) * keep


# --- CRLD's strong view: its own RandAugment, drawn per image, on pixel values 0..255 ---------
# Each operation takes float images (n, C, H, W) holding integers 0..255 and one magnitude per
# image (n,), and returns what PIL would (up to rounding): PIL works on 8-bit images throughout.


def _blend(degenerate: Tensor, img: Tensor, factor: Tensor) -> Tensor:
    """PIL's ImageEnhance: degenerate + factor * (img - degenerate)."""
    return degenerate + factor.view(-1, 1, 1, 1) * (img - degenerate)


def _luma(img: Tensor) -> Tensor:
    """PIL's conversion to mode L, ITU-R 601-2 weights (a single channel is its own luma)."""
    if img.shape[1] != 3:
        return img
    weights = torch.tensor([0.299, 0.587, 0.114], device=img.device).view(1, 3, 1, 1)
    return (img * weights).sum(dim=1, keepdim=True).round()


def _auto_contrast(img: Tensor, v: Tensor) -> Tensor:
    low, high = img.amin(dim=(2, 3), keepdim=True), img.amax(dim=(2, 3), keepdim=True)
    scale = 255 / (high - low).clamp_min(1)
    return torch.where(high > low, ((img - low) * scale).floor(), img)


def _brightness(img: Tensor, v: Tensor) -> Tensor:
    return _blend(torch.zeros_like(img), img, v)


def _color(img: Tensor, v: Tensor) -> Tensor:
    return _blend(_luma(img).expand_as(img), img, v)


def _contrast(img: Tensor, v: Tensor) -> Tensor:
    mean = (_luma(img).mean(dim=(1, 2, 3), keepdim=True) + 0.5).floor()
    return _blend(mean.expand_as(img), img, v)


def _equalize(img: Tensor, v: Tensor) -> Tensor:
    """PIL's ImageOps.equalize, per image and channel: lut[i] = (step // 2 + #pixels below i)
    // step, step = (#pixels - #pixels at the top level) // 255; identity when step is 0."""
    n, c, height, width = img.shape
    flat = img.reshape(n * c, height * width).long()
    histogram = torch.zeros(n * c, 256, device=img.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float)
    )
    top = 255 - histogram.flip(1).ne(0).float().argmax(dim=1, keepdim=True)
    step = ((height * width - histogram.gather(1, top)) / 255).floor()
    below = histogram.cumsum(1) - histogram
    lut = ((step / 2).floor() + below).div(step.clamp_min(1)).floor().clamp(0, 255)
    equalized = lut.gather(1, flat).float()
    return torch.where(step > 0, equalized, flat.float()).view_as(img)


def _identity(img: Tensor, v: Tensor) -> Tensor:
    return img


def _posterize(img: Tensor, v: Tensor) -> Tensor:
    dropped = 2.0 ** (8 - v.floor().clamp(1, 8)).view(-1, 1, 1, 1)
    return (img / dropped).floor() * dropped


def _sharpness(img: Tensor, v: Tensor) -> Tensor:
    """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, over 13); border pixels keep
    their values, as PIL's filter leaves them."""
    c = img.shape[1]
    kernel = torch.ones(3, 3, device=img.device)
    kernel[1, 1] = 5
    kernel = (kernel / 13).expand(c, 1, 3, 3)
    smooth = img.clone()
    smooth[:, :, 1:-1, 1:-1] = F.conv2d(img, kernel, groups=c).round()
    return _blend(smooth, img, v)


def _solarize(img: Tensor, v: Tensor) -> Tensor:
    return torch.where(img >= v.view(-1, 1, 1, 1), 255 - img, img)


def _affine(img: Tensor, theta: Tensor) -> Tensor:
    """Resample with an affine map (n, 2, 3) from output to input in grid_sample's normalised
    coordinates; nearest neighbour and black outside, as PIL's transform and rotate."""
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _theta(n: int, device: torch.device) -> Tensor:
    return torch.eye(2, 3, device=device).repeat(n, 1, 1)


def _rotate(img: Tensor, degrees: Tensor) -> Tensor:
    """PIL's rotate: counter-clockwise by `degrees` about the centre."""
    _, _, height, width = img.shape
    angle = degrees * math.pi / 180
    theta = _theta(len(img), img.device)
    theta[:, 0, 0], theta[:, 0, 1] = angle.cos(), -angle.sin() * height / width
    theta[:, 1, 0], theta[:, 1, 1] = angle.sin() * width / height, angle.cos()
    return _affine(img, theta)


def _shear_x(img: Tensor, v: Tensor) -> Tensor:
    """PIL's affine (1, v, 0, 0, 1, 0): input x = x + v y about the top-left corner."""
    _, _, height, width = img.shape
    theta = _theta(len(img), img.device)
    theta[:, 0, 1] = theta[:, 0, 2] = v * height / width
    return _affine(img, theta)


def _shear_y(img: Tensor, v: Tensor) -> Tensor:
    _, _, height, width = img.shape
    theta = _theta(len(img), img.device)
    theta[:, 1, 0] = theta[:, 1, 2] = v * width / height
    return _affine(img, theta)


def _translate_x(img: Tensor, v: Tensor) -> Tensor:
    """PIL's affine (1, 0, v * width, 0, 1, 0): a shift by a fraction v of the width."""
    theta = _theta(len(img), img.device)
    theta[:, 0, 2] = 2 * v
    return _affine(img, theta)


def _translate_y(img: Tensor, v: Tensor) -> Tensor:
    theta = _theta(len(img), img.device)
    theta[:, 1, 2] = 2 * v
    return _affine(img, theta)


# CRLD's augment_list (mdistiller/dataset/cifar100.py in its code): each operation with the
# range its magnitude is drawn from uniformly, per image and per operation.
CRLD_OPERATIONS: tuple[tuple[str, Callable[[Tensor, Tensor], Tensor], float, float], ...] = (
    ("auto_contrast", _auto_contrast, 0.0, 1.0),
    ("brightness", _brightness, 0.05, 0.95),
    ("color", _color, 0.05, 0.95),
    ("contrast", _contrast, 0.05, 0.95),
    ("equalize", _equalize, 0.0, 1.0),
    ("identity", _identity, 0.0, 1.0),
    ("posterize", _posterize, 4.0, 8.0),  # bits kept: int(v), so 4 to 7
    ("rotate", _rotate, -30.0, 30.0),  # degrees
    ("sharpness", _sharpness, 0.05, 0.95),
    ("shear_x", _shear_x, -0.3, 0.3),
    ("shear_y", _shear_y, -0.3, 0.3),
    ("solarize", _solarize, 0.0, 256.0),  # threshold
    ("translate_x", _translate_x, -0.3, 0.3),  # fraction of the width
    ("translate_y", _translate_y, -0.3, 0.3),
)


def rand_augment(x: Tensor, *, num_ops: int = 2) -> Tensor:
    """CRLD's RandAugment(n=2) of a uint8 batch: each image draws `num_ops` operations of
    CRLD_OPERATIONS (with replacement) and, for each, a magnitude uniform in its range; all are
    applied (no probability of skipping). CRLD's m = 10 is passed but never read.

    Every operation runs on the whole batch and each image keeps its own operation's output:
    selecting the images of an operation instead would read their count on the host, 28 device
    syncs per training step."""
    img = x.float()
    n = len(img)
    for _ in range(num_ops):
        chosen = torch.randint(len(CRLD_OPERATIONS), (n, 1, 1, 1), device=x.device)
        u = torch.rand(n, device=x.device)
        out = img
        for k, (_, operation, low, high) in enumerate(CRLD_OPERATIONS):
            out = torch.where(chosen == k, operation(img, low + (high - low) * u), out)
        img = out.round().clamp(0, 255)  # PIL keeps 8-bit images between steps
    return img.to(torch.uint8)


def crld_cutout(x: Tensor, *, fill: Tensor | float = 0, max_fraction: float = 0.5) -> Tensor:
    """The Cutout that ends CRLD's RandAugment, per image: side v * width with v ~ U(0, 0.5),
    centre (cx, cy) uniform over the image, x0 = int(max(0, cx - side / 2)),
    x1 = min(width, x0 + side) (y likewise), and pixels x0..x1, y0..y1 painted with `fill`
    (both ends included, as PIL's rectangle; CRLD paints the mean pixel (125, 123, 114))."""
    n, _, height, width = x.shape
    side = torch.rand(n, device=x.device) * max_fraction * width
    cx, cy = torch.rand(n, device=x.device) * width, torch.rand(n, device=x.device) * height
    x0, y0 = (cx - side / 2).clamp_min(0).floor(), (cy - side / 2).clamp_min(0).floor()
    x1, y1 = (x0 + side).clamp_max(width), (y0 + side).clamp_max(height)
    rows = torch.arange(height, device=x.device).view(1, -1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, -1)

    def within(index: Tensor, low: Tensor, high: Tensor) -> Tensor:
        return (index >= low.view(-1, 1, 1)) & (index <= high.view(-1, 1, 1))

    hole = within(rows, y0, y1) & within(cols, x0, x1) & (side > 0).view(-1, 1, 1)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return torch.where(hole.unsqueeze(1), fill.expand_as(x), x)


def strong_view(
    x: Tensor, *, fill: Tensor | float = 0, padding: int = 0, flip: bool = False
) -> Tensor:
    """CRLD's strong view of a uint8 batch: RandomCrop(padding) + RandomHorizontalFlip drawn
    for this view alone, then its RandAugment (two operations, magnitudes drawn per image over
    their full ranges) and Cutout. CRLD's weak view is crop + flip only; the two views crop and
    flip independently, so pass the un-augmented batch with the dataset's `padding` and `flip`.
    With padding = 0 and flip = False, `x` is taken as cropped and flipped already."""
    if padding > 0 or flip:
        x = crop_flip(x, padding=padding, flip=flip)
    return crld_cutout(rand_augment(x), fill=fill)


# --- Good-DA-in-KD's augmentation schemes (helper/loops.py, get_mixed_input, in its code) ----
# Each takes the normalised, crop+flipped batch x (what the loader yields) and returns the extra
# copy x'. Where the official code works on pixels, `normalize` (uint8 -> normalised floats)
# says where black and white lie; without it they are taken as each channel's lowest and highest
# value in the batch, which is exact when the batch holds a black and a white pixel per channel
# (CIFAR and digits batches of 64 do, nearly always).


def _pixel_levels(x: Tensor, normalize: Normalize | None) -> tuple[Tensor, Tensor]:
    """Black (pixel 0) and white (255) in x's normalised space, per channel (1, C, 1, 1)."""
    if normalize is not None:
        pixels = torch.tensor([0, 255], dtype=torch.uint8, device=x.device)
        levels = normalize(pixels.view(2, 1, 1, 1).expand(2, x.shape[1], 1, 1))
        return levels[:1], levels[1:]
    black, white = x.amin(dim=(0, 2, 3), keepdim=True), x.amax(dim=(0, 2, 3), keepdim=True)
    return black, torch.where(white > black, white, black + 1)


def identity(
    x: Tensor, scorer: Scorer | None = None, *, normalize: Normalize | None = None
) -> Tensor:
    """Official 'identity': x' = x (the official code copies it; nothing here writes to it)."""
    return x


def flip(
    x: Tensor, scorer: Scorer | None = None, *, normalize: Normalize | None = None
) -> Tensor:
    """Official 'flip': torchvision's RandomHorizontalFlip() called on the whole batch, so the
    batch is mirrored as one with probability 0.5 (all images or none)."""
    if x.dim() != 4 or float(torch.rand(1)) >= 0.5:
        return x
    return x.flip(3)


def crop_then_flip(
    x: Tensor, scorer: Scorer | None = None, *, normalize: Normalize | None = None
) -> Tensor:
    """Official 'crop+flip': torchvision's RandomCrop(size, padding=size / 8) (4 on CIFAR's 32,
    8 on Tiny ImageNet's 64) then RandomHorizontalFlip(), both called on the whole batch: one
    crop offset for the batch, black (pixel 0) padding, then the batch mirrored with
    probability 0.5."""
    if x.dim() != 4:
        return x
    n, c, height, width = x.shape
    padding = max(1, width // 8)
    black, _ = _pixel_levels(x, normalize)
    padded = black.expand(n, c, height + 2 * padding, width + 2 * padding).clone()
    padded[:, :, padding : padding + height, padding : padding + width] = x
    top = int(torch.randint(0, 2 * padding + 1, (1,)))
    left = int(torch.randint(0, 2 * padding + 1, (1,)))
    return flip(padded[:, :, top : top + height, left : left + width].contiguous())


def cutout_scheme(
    x: Tensor, scorer: Scorer | None = None, *, normalize: Normalize | None = None
) -> Tensor:
    """Official 'cutout' (after the Cutout authors' code): one hole (n_holes = 1) of length 8 on
    CIFAR-100's 32 x 32 images, at the same place for the whole batch, its centre uniform over
    the pixels, clipped at the border, and x multiplied by the mask, so the hole holds the mean
    pixel. Other sizes: a quarter of the side, as the official 16 on Tiny ImageNet's 64 and 56
    on ImageNet's 224. Features (N, D) drop 20% of their entries instead."""
    if x.dim() != 4:
        return noisy_view(x, noise=0)
    return cutout(x, length=max(1, min(x.shape[2:]) // 4))


def autoaugment(
    x: Tensor, scorer: Scorer | None = None, *, normalize: Normalize | None = None
) -> Tensor:
    """Official 'autoaugment': torchvision's AutoAugment with the CIFAR10 policy on the batch
    unnormalised to uint8, then normalised again. Called on the whole batch, so one sub-policy
    (and one draw of its probabilities and signs) serves the batch. The official code truncates
    pixel * 255 to uint8; this rounds. Features (N, D) are returned as they are."""
    if x.dim() != 4:
        return x
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    black, white = _pixel_levels(x, normalize)
    pixels = ((x - black) / (white - black) * 255).round().clamp(0, 255).to(torch.uint8)
    augmented = AutoAugment(AutoAugmentPolicy.CIFAR10)(pixels)
    return black + augmented.float() / 255 * (white - black)


def batch_mixup(
    x: Tensor, scorer: Scorer | None = None, *, normalize: Normalize | None = None
) -> Tensor:
    """Official 'mixup' (after the mixup authors' CIFAR code): one lambda ~ Beta(1, 1) for the
    batch and a random permutation of partners (fixed points allowed)."""
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    return lam * x + (1 - lam) * x[torch.randperm(len(x), device=x.device)]


def cutmix_scheme(
    x: Tensor, scorer: Scorer | None = None, *, normalize: Normalize | None = None
) -> Tensor:
    """Official 'cutmix' (after CutMix's code): one lambda ~ Beta(1, 1) per batch, a box of sides
    int(size * sqrt(1 - lambda)) around a uniform centre, clipped, pasted from partners drawn
    without fixed points (see `cutmix`)."""
    return cutmix(x)[0]


def cutmix_pool(x: Tensor) -> Tensor:
    """CutMixPick's candidates: the batch CutMixed twice (2N images), each with its own lambda,
    box and partners (the official mix_n_run = 2)."""
    return torch.cat([cutmix(x)[0], cutmix(x)[0]])


def entropy(logits: Tensor) -> Tensor:
    """Entropy of each row's softmax at T = 1."""
    log_p = logits.float().log_softmax(dim=1)
    return -(log_p.exp() * log_p).sum(dim=1)


def cutmix_pick(
    x: Tensor, scorer: Scorer | None = None, *, normalize: Normalize | None = None
) -> Tensor:
    """Official 'cutmix_pick' (mix_n_run = 2, n_pick = the batch size): of a 2x CutMix pool,
    the N images with the highest entropy (T = 1) of `scorer`'s predictions. `da_kd` passes the
    teacher (cutmix_pick_criterion = teacher_entropy); the student's entropy (student_entropy)
    is method `cutmixpick_kd` with pick = s_ent."""
    if scorer is None:
        raise ValueError("cutmixpick needs a scorer: the model whose entropy picks the images")
    pool = cutmix_pool(x)
    return pool[entropy(scorer(pool)).topk(len(x)).indices]


# The extra augmented copy x' of a (normalised, crop+flipped) batch, by name, as compared in
# Good-DA-in-KD. Called as AUGMENTATIONS[name](x, scorer, normalize=...); `cutmixpick` needs the
# scorer (the model whose entropy picks), `normalize` makes the pixel-space schemes exact.
AUGMENTATIONS: dict[str, Callable[..., Tensor]] = {
    "identity": identity,
    "flip": flip,
    "crop_flip": crop_then_flip,
    "cutout": cutout_scheme,
    "autoaugment": autoaugment,
    "mixup": batch_mixup,
    "cutmix": cutmix_scheme,
    "cutmixpick": cutmix_pick,
}
