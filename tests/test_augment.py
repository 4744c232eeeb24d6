from __future__ import annotations

import torch
import torch.nn.functional as F

from kdtune.augment import crop_flip, mixup
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
