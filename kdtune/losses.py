"""Knowledge-distillation objectives as pure functions of logits.

Every loss shares one signature,
``loss(student_logits, teacher_logits, targets, **hyperparameters)``,
with hyperparameters keyword-only, and returns a scalar averaged over the batch. ``targets`` are
integer class labels or, after mixup, per-class probabilities. Nothing here imports Ray or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

LossFn = Callable[..., Tensor]


def ce(student_logits: Tensor, teacher_logits: Tensor | None, targets: Tensor) -> Tensor:
    """Cross-entropy on labels (int) or label distributions (float); the teacher is not used."""
    return F.cross_entropy(student_logits, targets)


def kd(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *, temperature: float
) -> Tensor:
    """Hinton KD: T^2 * KL(softmax(t/T) || softmax(s/T)), summed over classes, mean over samples.

    The T^2 factor keeps gradient magnitudes comparable across temperatures (Hinton et al. 2015).
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    kl_per_sample = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return kl_per_sample.mean() * temperature**2


LOSSES: dict[str, LossFn] = {"ce": ce, "kd": kd}
