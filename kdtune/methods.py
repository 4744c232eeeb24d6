"""Training methods: how one step combines views, teacher calls and a loss.

A method is a step function plus the hyperparameters it takes, each at its paper default. The
engine calls `step(student, teacher, batch, params)` and back-propagates the returned loss; it never
looks inside a method. `teacher` is a frozen callable (no gradient) or None for `ce`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdtune import augment, losses

TeacherFn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class StepBatch:
    x: Tensor  # normalised float inputs, default training augmentation applied
    y: Tensor  # int64 labels
    num_classes: int


StepFn = Callable[[nn.Module, "TeacherFn | None", StepBatch, Mapping[str, float]], Tensor]


@dataclass(frozen=True)
class Method:
    step: StepFn
    defaults: Mapping[str, float]  # every hyperparameter the method takes, at its paper default
    uses_teacher: bool
    reference: str


def _ce_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Mapping[str, float]
) -> Tensor:
    return losses.ce(student(batch.x), None, batch.y)


def _kd_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Mapping[str, float]
) -> Tensor:
    assert teacher is not None
    student_logits, teacher_logits = student(batch.x), teacher(batch.x)
    return p["w_ce"] * losses.ce(student_logits, teacher_logits, batch.y) + p["w_kd"] * losses.kd(
        student_logits, teacher_logits, batch.y, temperature=p["temperature"]
    )


def _mixup_kd_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Mapping[str, float]
) -> Tensor:
    """Mixup only on the student's inputs; the frozen teacher is queried on the same mixed batch."""
    assert teacher is not None
    one_hot = F.one_hot(batch.y, batch.num_classes).float()
    mixed_x, mixed_targets = augment.mixup(batch.x, one_hot, alpha=p["alpha"])
    student_logits, teacher_logits = student(mixed_x), teacher(mixed_x)
    return p["w_ce"] * losses.ce(student_logits, teacher_logits, mixed_targets) + p[
        "w_kd"
    ] * losses.kd(student_logits, teacher_logits, mixed_targets, temperature=p["temperature"])


METHODS: dict[str, Method] = {
    "ce": Method(_ce_step, {}, uses_teacher=False, reference="student alone, cross-entropy"),
    # mdistiller defaults: T = 4, CE weight 0.1, KD weight 0.9 (METHODS.md 6.1).
    "kd": Method(
        _kd_step,
        {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9},
        uses_teacher=True,
        reference="Hinton et al. 2015",
    ),
    # KD-Mixup path B defaults: T = 2, alpha = 1, 0.2 CE_mix + 0.8 KD (METHODS.md 1.2).
    "mixup_kd": Method(
        _mixup_kd_step,
        {"temperature": 2.0, "alpha": 1.0, "w_ce": 0.2, "w_kd": 0.8},
        uses_teacher=True,
        reference="Medina et al. 2026, student-only mixup",
    ),
}


def method_defaults() -> dict[str, dict[str, float]]:
    """The hyperparameter table `TrialConfig.from_dict` validates against."""
    return {name: dict(method.defaults) for name, method in METHODS.items()}
