"""Knowledge-distillation objectives as pure functions of logits.

Every loss shares one signature,
``loss(student_logits, teacher_logits, targets, **hyperparameters)``,
with hyperparameters keyword-only, and returns a scalar averaged over the batch. ``targets`` are
integer class labels or, after mixup, per-class probabilities. Nothing here imports Ray or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
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


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each sample's logits (unbiased std), as logit-standardised KD does (Sun+ 2024)."""
    mean = logits.mean(dim=1, keepdim=True)
    return (logits - mean) / (eps + logits.std(dim=1, keepdim=True))


def lskd(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *, temperature: float
) -> Tensor:
    """Logit-standardised KD: `kd` on z-scored student and teacher logits; T is a base one."""
    return kd(standardize(student_logits), standardize(teacher_logits), targets,
              temperature=temperature)  # fmt: skip


def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    *,
    temperature: float,
    w_tckd: float,
    w_nckd: float,
) -> Tensor:
    """Decoupled KD (Zhao et al. 2022): w_tckd * TCKD + w_nckd * NCKD (the paper's alpha and
    beta), each scaled by T^2.

    TCKD is the KL between the binary (target, rest) distributions; NCKD the KL between the
    distributions over the non-target classes, obtained as mdistiller does by subtracting 1000
    from the target logit before the softmax. `targets` must be integer labels.

    The binary distributions are computed in log space: log(1 - p_target) is the logsumexp of
    the non-target log-probabilities. mdistiller's `1 - p_target` in float32 loses the rest's
    mass for a confident student (at a target-logit gap of 40 it is exactly 0, and the log of
    its clamp 1e-12 gives 43.1 where the exact loss is 50.7) and has no gradient there.
    """
    target_mask = F.one_hot(targets, student_logits.shape[1]).bool()

    def binary_log(logits: Tensor) -> Tensor:
        """log [p_target, 1 - p_target] of softmax(logits / T)."""
        log_p = F.log_softmax(logits / temperature, dim=1)
        log_target = log_p.masked_fill(~target_mask, -torch.inf).logsumexp(1, keepdim=True)
        log_rest = log_p.masked_fill(target_mask, -torch.inf).logsumexp(1, keepdim=True)
        return torch.cat([log_target, log_rest], dim=1)

    log_b_student, log_b_teacher = binary_log(student_logits), binary_log(teacher_logits)
    tckd = (log_b_teacher.exp() * (log_b_teacher - log_b_student)).sum(1)
    masked = 1000.0 * target_mask
    log_q_student = F.log_softmax(student_logits / temperature - masked, dim=1)
    log_q_teacher = F.log_softmax(teacher_logits / temperature - masked, dim=1)
    nckd = (log_q_teacher.exp() * (log_q_teacher - log_q_student)).sum(1)
    return (w_tckd * tckd.mean() + w_nckd * nckd.mean()) * temperature**2


def topk_scale(
    teacher_logits: Tensor, targets: Tensor, *, k: int, topk_weight: float, topk_bias: float
) -> Tensor:
    """TopKD's Top-K Scaling Module, as an ASSUMPTION (the paper's w_i and Delta are in an
    appendix that was not available; every TopKD assumption is listed in METHODS.md 3.3 and in
    `topkd` below).

    Assumed: logits are measured from the sample's smallest one, so that the result does not
    depend on a constant added to all of them (softmax does not either); the teacher's top-K
    are multiplied by w_r = topk_weight ** ((K - r) / (K - 1)) for rank r = 1..K (top-1 x
    topk_weight, K-th x 1); the ground-truth logit, when outside the top K, gets the top-1
    weight, but never less than it had (the correction is there to raise the ground truth);
    every scaled logit is shifted by Delta = topk_bias * (mean(top-K) - mean(others)). Other
    logits are unchanged.
    """
    num_classes = teacher_logits.shape[1]
    k = max(1, min(int(k), num_classes - 1))
    floor = teacher_logits.min(1, keepdim=True).values
    above = teacher_logits - floor  # >= 0, unchanged by a shift of all logits
    top_values, top_index = above.topk(k, dim=1)
    ranks = torch.arange(k, device=teacher_logits.device, dtype=teacher_logits.dtype)
    rank_weights = topk_weight ** ((k - 1 - ranks) / max(k - 1, 1))
    weights = torch.ones_like(above).scatter(1, top_index, rank_weights.expand_as(top_values))
    in_top = torch.zeros_like(above, dtype=torch.bool).scatter(1, top_index, True)
    corrected = F.one_hot(targets, num_classes).bool() & ~in_top
    others_mean = (above * ~in_top).sum(1, keepdim=True) / (num_classes - k)
    delta = topk_bias * (top_values.mean(1, keepdim=True) - others_mean)
    scaled = above * torch.where(corrected, torch.full_like(weights, topk_weight), weights) + delta
    scaled = torch.where(corrected, torch.maximum(scaled, above), scaled)
    return floor + torch.where(in_top | corrected, scaled, above)


def _group_cosine(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    """Per-sample cosine similarity over the classes in `mask` (1 where the group is empty)."""
    s, t = student_logits * mask, teacher_logits * mask
    dot = (s * t).sum(1)
    norms = s.norm(dim=1) * t.norm(dim=1)
    return torch.where(mask.any(1), dot / norms.clamp_min(1e-12), torch.ones_like(dot))


def topkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    *,
    k: int,
    w_pos: float,
    w_neg: float,
    con_temperature: float,
    w_tdl: float,
    w_con: float,
) -> Tensor:
    """TopKD's loss on (already scaled) teacher logits: w_tdl * TDL + w_con * contrastive.

    TDL (Top-K decoupled loss) compares student and teacher logits by cosine similarity within
    three groups picked on the teacher: its K largest logits, its K smallest, and the rest,
    weighted w_pos, w_neg, 1 (the paper's alpha and beta). ASSUMPTION: the weighted sum is
    divided by (w_pos + w_neg + 1) so that
    TDL = 1 - similarity is 0 when student == teacher. The instance-level contrastive term is a
    symmetric InfoNCE over the B x B matrix of student/teacher similarities; ASSUMPTION: the
    similarity is the Pearson correlation of the two logit vectors (z-scored dot product / C),
    divided by con_temperature.
    """
    num_classes = teacher_logits.shape[1]
    k = max(1, min(int(k), num_classes // 2))
    top = torch.zeros_like(teacher_logits, dtype=torch.bool).scatter(
        1, teacher_logits.topk(k, 1).indices, True
    )
    bottom = torch.zeros_like(top).scatter(1, (-teacher_logits).topk(k, 1).indices, True)
    rest = ~(top | bottom)
    similarity = (
        w_pos * _group_cosine(student_logits, teacher_logits, top)
        + w_neg * _group_cosine(student_logits, teacher_logits, bottom)
        + _group_cosine(student_logits, teacher_logits, rest)
    ) / (w_pos + w_neg + 1)
    tdl = 1 - similarity.mean()
    z_s, z_t = standardize(student_logits), standardize(teacher_logits)
    correlation = z_s @ z_t.T / (num_classes - 1)
    labels = torch.arange(len(z_s), device=z_s.device)
    contrastive = 0.5 * (
        F.cross_entropy(correlation / con_temperature, labels)
        + F.cross_entropy(correlation.T / con_temperature, labels)
    )
    return w_tdl * tdl + w_con * contrastive


def crld(
    student_weak: Tensor,
    student_strong: Tensor,
    teacher_weak: Tensor,
    teacher_strong: Tensor,
    targets: Tensor,
    *,
    temperature: float,
    tau_w: float,
    tau_s: float,
    w_ce: float,
    w_wv: float,
    w_cv: float,
) -> Tensor:
    """CRLD (Zhang et al. 2024): CE on both views + within-view KD gated by the teacher's weak-view
    confidence >= tau_w + cross-view KD gated by its strong-view confidence >= tau_s.

    Confidences are teacher softmax maxima at T = 1. The KD terms are averaged over the whole
    batch: masked samples contribute 0 and are not renormalised.
    """

    def kd_per_sample(student: Tensor, teacher: Tensor) -> Tensor:
        log_p_s = F.log_softmax(student / temperature, dim=1)
        log_p_t = F.log_softmax(teacher / temperature, dim=1)
        return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1) * temperature**2

    gate_weak = (teacher_weak.softmax(1).max(1).values >= tau_w).float()
    gate_strong = (teacher_strong.softmax(1).max(1).values >= tau_s).float()
    within = kd_per_sample(student_weak, teacher_weak) + kd_per_sample(
        student_strong, teacher_strong
    )
    cross = kd_per_sample(student_strong, teacher_weak) + kd_per_sample(
        student_weak, teacher_strong
    )
    hard = F.cross_entropy(student_weak, targets) + F.cross_entropy(student_strong, targets)
    return w_ce * hard + w_wv * (gate_weak * within).mean() + w_cv * (gate_strong * cross).mean()


LOSSES: dict[str, LossFn] = {"ce": ce, "kd": kd, "lskd": lskd, "dkd": dkd, "topkd": topkd}
