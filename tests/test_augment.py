from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from kdtune import augment
from kdtune.augment import (
    AUGMENTATIONS,
    CRLD_OPERATIONS,
    crld_cutout,
    crop_flip,
    derangement,
    entropy,
    mixup,
    rand_augment,
    strong_view,
)
from kdtune.methods import METHODS, StepBatch


def test_crop_without_padding_or_flip_is_identity():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(crop_flip(x, padding=0, flip=False), x)


def test_crop_is_a_window_of_the_padded_image():
    torch.manual_seed(0)
    x = torch.randint(1, 256, (16, 1, 6, 6), dtype=torch.uint8)
    out = crop_flip(x, padding=2, flip=False)
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_mirrors_about_half_the_batch():
    torch.manual_seed(0)
    x = torch.arange(400 * 4, dtype=torch.float32).view(400, 1, 1, 4)
    out = crop_flip(x, padding=0, flip=True)
    flipped = (out == x.flip(3)).all(dim=(1, 2, 3))
    assert ((out == x).all(dim=(1, 2, 3)) | flipped).all()
    assert 150 < flipped.sum() < 250


def test_mixup_mixes_inputs_and_targets_with_the_same_lambda():
    torch.manual_seed(0)
    x = torch.randn(32, 3)
    targets = F.one_hot(torch.arange(32) % 4, 4).float()
    mixed_x, mixed_t = mixup(x, targets, alpha=1.0)
    assert torch.allclose(mixed_t.sum(1), torch.ones(32))
    assert not torch.allclose(mixed_x, x)
    assert mixup(x, targets, alpha=0.0)[0] is x


def test_mixup_kd_queries_the_teacher_on_the_student_inputs():
    torch.manual_seed(0)
    seen: dict[str, torch.Tensor] = {}
    student = torch.nn.Linear(3, 4)

    def recording_student(x):
        seen["student"] = x
        return student(x)

    def teacher(x):
        seen["teacher"] = x
        return torch.zeros(len(x), 4)

    x = torch.randn(16, 3)
    batch = StepBatch(x, torch.arange(16) % 4, 4, raw=x, normalize=lambda v: v, fill=torch.zeros(3))
    METHODS["mixup_kd"].step(recording_student, teacher, batch, METHODS["mixup_kd"].defaults)
    assert torch.equal(seen["teacher"], seen["student"])
    assert not torch.allclose(seen["teacher"], batch.x)  # the batch was mixed


# --- Good-DA-in-KD's schemes, each against the official definition -------------------------


def _normalize(u: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, -1, 1, 1)
    return (u.float() / 255 - mean) / 0.25


def test_every_scheme_of_the_paper_is_named():
    assert list(AUGMENTATIONS) == ["identity", "flip", "crop_flip", "cutout", "autoaugment",
                                   "mixup", "cutmix", "cutmixpick"]  # fmt: skip


def test_flip_scheme_mirrors_all_or_none_of_a_batch_and_about_half_the_batches():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 2, 5)
    outcomes = []
    for _ in range(400):
        out = AUGMENTATIONS["flip"](x)
        assert torch.equal(out, x) or torch.equal(out, x.flip(3))
        outcomes.append(torch.equal(out, x.flip(3)))
    assert 160 < sum(outcomes) < 240


def test_crop_flip_scheme_shifts_the_whole_batch_by_one_offset_with_black_padding():
    torch.manual_seed(0)
    pixels = torch.randint(1, 256, (6, 3, 32, 32), dtype=torch.uint8)
    padded = F.pad(pixels, (4, 4, 4, 4))  # black
    seen = set()
    for _ in range(30):
        out = AUGMENTATIONS["crop_flip"](_normalize(pixels), normalize=_normalize)
        back = ((out * 0.25 + torch.tensor([0.5, 0.4, 0.3]).view(1, -1, 1, 1)) * 255).round()
        draws = {(dy, dx, mirrored) for dy in range(9) for dx in range(9) for mirrored in (0, 1)
                 if torch.equal(back, (padded[:, :, dy : dy + 32, dx : dx + 32].flip(3)
                                       if mirrored else padded[:, :, dy : dy + 32, dx : dx + 32])
                                .float())}  # fmt: skip
        assert len(draws) == 1  # one crop and one flip for every image
        seen |= draws
    assert len(seen) > 10


def test_cutout_scheme_makes_one_hole_of_8_by_8_on_32_by_32_images_at_the_mean():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) + 1  # no pixel at the mean (0) before
    for _ in range(50):
        hole = AUGMENTATIONS["cutout"](x) == 0
        assert (hole == hole[:1, :1]).all()  # the same hole in every image and channel
        rows, cols = hole[0, 0].any(1).nonzero().squeeze(1), hole[0, 0].any(0).nonzero().squeeze(1)
        assert hole[0, 0].sum() == len(rows) * len(cols)  # one rectangle
        for index in (rows, cols):
            assert len(index) <= 8 and index[-1] - index[0] == len(index) - 1
            if index[0] > 0 and index[-1] < 31:  # not clipped by the border
                assert len(index) == 8


def test_autoaugment_scheme_stays_on_the_pixel_grid_and_needs_no_normalizer_on_full_range():
    torch.manual_seed(0)
    pixels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    x = _normalize(pixels)
    torch.manual_seed(1)
    out = AUGMENTATIONS["autoaugment"](x, normalize=_normalize)
    back = (out * 0.25 + torch.tensor([0.5, 0.4, 0.3]).view(1, -1, 1, 1)) * 255
    assert out.shape == x.shape and torch.allclose(back, back.round(), atol=1e-3)
    torch.manual_seed(1)  # the batch holds pixels 0 and 255: its range stands in for normalize
    assert torch.allclose(AUGMENTATIONS["autoaugment"](x), out, atol=1e-5)


def test_mixup_scheme_uses_one_lambda_for_the_batch():
    x = torch.randn(8, 3, 4, 4)
    torch.manual_seed(3)
    out = AUGMENTATIONS["mixup"](x)
    torch.manual_seed(3)
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    assert torch.allclose(out, lam * x + (1 - lam) * x[torch.randperm(8)])


def test_derangement_is_uniform_over_permutations_without_fixed_points():
    torch.manual_seed(0)
    swaps = 0
    for _ in range(300):
        partner = derangement(4, "cpu")
        assert sorted(partner.tolist()) == [0, 1, 2, 3] and (partner != torch.arange(4)).all()
        swaps += bool((partner[partner] == torch.arange(4)).all())
    assert 60 < swaps < 140  # 3 of the 9 derangements of 4 are two swaps: about 100 of 300


def test_cutmix_pick_keeps_the_highest_entropy_half_of_the_pool():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 8, 8)
    weights = torch.randn(3 * 8 * 8, 5)
    seen: list[torch.Tensor] = []

    def scorer(v: torch.Tensor) -> torch.Tensor:
        seen.append(v)
        return v.flatten(1) @ weights

    picked = AUGMENTATIONS["cutmixpick"](x, scorer)
    pool = seen[0]
    assert len(pool) == 12 and len(picked) == 6
    assert torch.equal(picked, pool[entropy(scorer(pool)).topk(6).indices])


# --- CRLD's strong view ---------------------------------------------------------------------

FILL = torch.tensor([125, 123, 114], dtype=torch.uint8)


@pytest.mark.parametrize("name, magnitude, reference", [
    ("auto_contrast", 0.0, lambda im, v: ImageOps.autocontrast(im)),
    ("equalize", 0.0, lambda im, v: ImageOps.equalize(im)),
    ("brightness", 0.37, lambda im, v: ImageEnhance.Brightness(im).enhance(v)),
    ("color", 0.37, lambda im, v: ImageEnhance.Color(im).enhance(v)),
    ("contrast", 0.37, lambda im, v: ImageEnhance.Contrast(im).enhance(v)),
    ("sharpness", 0.37, lambda im, v: ImageEnhance.Sharpness(im).enhance(v)),
    ("posterize", 5.6, lambda im, v: ImageOps.posterize(im, int(v))),
    ("solarize", 100.5, lambda im, v: ImageOps.solarize(im, v)),
    ("rotate", 23.0, lambda im, v: im.rotate(v)),
    ("shear_x", 0.23, lambda im, v: im.transform(im.size, Image.AFFINE, (1, v, 0, 0, 1, 0))),
    ("shear_y", -0.17, lambda im, v: im.transform(im.size, Image.AFFINE, (1, 0, 0, v, 1, 0))),
    ("translate_x", 0.25, lambda im, v: im.transform(im.size, Image.AFFINE,
                                                      (1, 0, v * 32, 0, 1, 0))),
    ("translate_y", -0.25, lambda im, v: im.transform(im.size, Image.AFFINE,
                                                       (1, 0, 0, 0, 1, v * 32))),
])  # fmt: skip
def test_crld_operations_match_pil_as_crld_calls_it(name, magnitude, reference):
    generator = np.random.default_rng(0)
    images = (generator.random((4, 32, 32, 3)) ** 2 * 200 + 30).astype(np.uint8)
    operation = {op_name: op for op_name, op, _, _ in CRLD_OPERATIONS}[name]
    x = torch.from_numpy(images.copy()).permute(0, 3, 1, 2).float()
    ours = operation(x, torch.full((4,), magnitude)).round().clamp(0, 255)
    theirs = torch.stack([torch.from_numpy(np.array(reference(Image.fromarray(im), magnitude)))
                          .permute(2, 0, 1) for im in images]).float()  # fmt: skip
    # PIL rounds some steps otherwise, and nearest-neighbour resampling can tie the other way
    assert ((ours - theirs).abs() <= 1).float().mean() > 0.99


def test_strong_view_keeps_uint8_and_the_shape():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    for padding, mirror in ((0, False), (4, True)):
        view = strong_view(x, fill=FILL, padding=padding, flip=mirror)
        assert view.dtype == torch.uint8 and view.shape == x.shape


def test_strong_view_draws_operations_and_magnitudes_per_image():
    """From 64 copies of one image, the old view (one draw per eighth of the batch) gave pairs
    in the same eighth that agreed on ~90% of pixels; per-image draws agree on few."""
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    views = rand_augment(image.expand(64, -1, -1, -1).contiguous()).flatten(1)
    equal = (views.unsqueeze(0) == views.unsqueeze(1)).float().mean(2)
    pairs = equal[torch.triu_indices(64, 64, 1).unbind()]
    assert pairs.mean() < 0.3 and (pairs > 0.9).float().mean() < 0.1
    assert len(torch.unique(views, dim=0)) >= 56


def test_strong_view_crops_and_flips_apart_from_the_weak_view(monkeypatch):
    monkeypatch.setattr(augment, "rand_augment", lambda x: x)
    monkeypatch.setattr(augment, "crld_cutout", lambda x, fill: x)
    torch.manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    weak = crop_flip(x, padding=4, flip=True)
    strong = strong_view(x, fill=FILL, padding=4, flip=True)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(8):  # every strong image is a crop (maybe mirrored) of its own original
        windows = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(strong[i], w) or torch.equal(strong[i], w.flip(2))
                   for w in windows)  # fmt: skip
    assert (weak != strong).flatten(1).any(1).float().mean() > 0.9


def test_crld_cutout_paints_one_square_per_image_up_to_half_the_side():
    torch.manual_seed(0)
    x = torch.zeros(200, 3, 32, 32, dtype=torch.uint8)
    hole = (crld_cutout(x, fill=FILL) == FILL.view(1, 3, 1, 1)).all(1)
    sides = []
    for mask in hole:
        rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
        assert mask.sum() == len(rows) * len(cols)  # one rectangle (or none)
        assert len(rows) <= 17 and len(cols) <= 17  # side <= 16 px, both ends painted
        sides.append(max(len(rows), len(cols)))
    assert 4 < sum(sides) / len(sides) < 12  # side ~ U(0, 16), clipped at the border
