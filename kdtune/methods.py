"""Training methods: how one step combines views, teacher calls and a loss.

A method is a step function plus the hyperparameters it takes, each at its paper default. The
engine calls `step(student, teacher, batch, params)` and back-propagates the returned loss; it
never looks inside a method. `teacher` is a frozen callable (no gradient), or None for `ce`.
Distillation terms are multiplied by `batch.kd_scale`, the warm-up factor the engine computes
from a method's `warmup` hyperparameter (DKD's linear warm-up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from kdtune import augment, losses

TeacherFn = Callable[[Tensor], Tensor]
Params = Mapping[str, "float | str"]


@dataclass(frozen=True)
class StepBatch:
    x: Tensor  # normalised float inputs, the default training augmentation applied
    y: Tensor  # int64 labels
    num_classes: int
    raw: Tensor  # the same batch before normalisation (uint8 images), for image-space views
    normalize: Callable[[Tensor], Tensor]
    fill: Tensor  # the mean pixel (uint8 per channel), what Cutout paints holes with
    kd_scale: float = 1.0  # warm-up factor of the distillation terms, set by the engine


StepFn = Callable[[nn.Module, "TeacherFn | None", StepBatch, Params], Tensor]


@dataclass(frozen=True)
class Method:
    step: StepFn
    defaults: Params  # every hyperparameter the method takes, at its paper default
    uses_teacher: bool
    reference: str
    # the teacher sees only the step's batch (`batch.x`), so its logits can be looked up by
    # sample index instead of computed (`StudySpec.cache_teacher_logits`)
    teacher_cacheable: bool = False


# TopKD's scaling constants (an assumption, METHODS.md 3.3), shared by topkd and the
# `topk_scale` switch of kd/dkd/lskd.
TOPK = {"k": 5.0, "topk_weight": 2.0, "topk_bias": 0.1}
SWITCHES = {"logit_standardize": 0.0, "topk_scale": 0.0}


def _teacher_target(teacher_logits: Tensor, y: Tensor, p: Params) -> Tensor:
    if p.get("topk_scale", 0.0):
        return losses.topk_scale(teacher_logits, y, k=int(p["k"]), scale=float(p["topk_weight"]),
                                 bias=float(p["topk_bias"]))  # fmt: skip
    return teacher_logits


def _kd_term(student_logits: Tensor, teacher_logits: Tensor, y: Tensor, p: Params) -> Tensor:
    loss = losses.lskd if p.get("logit_standardize", 0.0) else losses.kd
    return loss(student_logits, teacher_logits, y, temperature=float(p["temperature"]))


def _ce_step(student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    return losses.ce(student(batch.x), None, batch.y)


def _kd_step(student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    assert teacher is not None
    s, t = student(batch.x), _teacher_target(teacher(batch.x), batch.y, p)
    return p["w_ce"] * losses.ce(s, t, batch.y) + batch.kd_scale * p["w_kd"] * _kd_term(
        s, t, batch.y, p
    )


def _dkd_step(student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    assert teacher is not None
    s, t = student(batch.x), _teacher_target(teacher(batch.x), batch.y, p)
    if p["logit_standardize"]:
        s, t = losses.standardize(s), losses.standardize(t)
    decoupled = losses.dkd(s, t, batch.y, temperature=float(p["temperature"]),
                           alpha=float(p["w_tckd"]), beta=float(p["w_nckd"]))  # fmt: skip
    return p["w_ce"] * losses.ce(s, t, batch.y) + batch.kd_scale * decoupled


def _mixup_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params
) -> Tensor:
    """Mixup alone (Zhang et al. 2018): CE on mixed inputs and mixed labels, no teacher."""
    one_hot = F.one_hot(batch.y, batch.num_classes).float()
    x, targets = augment.mixup(
        batch.x, one_hot, alpha=float(p["alpha"]), partial=float(p["partial"])
    )
    return losses.ce(student(x), None, targets)


def _mixup_kd_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params
) -> Tensor:
    """Mixup on the student's inputs only; the frozen teacher is queried on the same mixed batch."""
    assert teacher is not None
    one_hot = F.one_hot(batch.y, batch.num_classes).float()
    x, targets = augment.mixup(
        batch.x, one_hot, alpha=float(p["alpha"]), partial=float(p["partial"])
    )
    s, t = student(x), teacher(x)
    return p["w_ce"] * losses.ce(s, t, targets) + batch.kd_scale * p["w_kd"] * _kd_term(
        s, t, targets, p
    )


def _kd_with_extra_view(
    student: nn.Module, teacher: TeacherFn, batch: StepBatch, p: Params, extra: Tensor,
    extra_student: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Good-DA-in-KD's loss: w_ce CE(x) + w_kd [KD on x + KD on the augmented copy x'], where
    the teacher's output on x' is the target (mixed labels are not used)."""
    s = student(batch.x if extra_student is not None else torch.cat([batch.x, extra]))
    s_x = s[: len(batch.x)]
    s_extra = extra_student if extra_student is not None else s[len(batch.x) :]
    t_x, t_extra = teacher(batch.x), teacher(extra)
    distill = _kd_term(s_x, t_x, batch.y, p) + _kd_term(s_extra, t_extra, batch.y, p)
    return p["w_ce"] * losses.ce(s_x, t_x, batch.y) + batch.kd_scale * p["w_kd"] * distill


def _da_kd_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params
) -> Tensor:
    """Good-DA-in-KD with x' = any augmentation of `augment.AUGMENTATIONS` (CutMixPick picks
    by the teacher's entropy here), so a study can train one student per augmentation."""
    assert teacher is not None
    extra = augment.AUGMENTATIONS[str(p["augmentation"])](batch.x, teacher)
    return _kd_with_extra_view(student, teacher, batch, p, extra)


def highest_entropy(logits: Tensor, n: int) -> Tensor:
    """Indices of the n rows whose softmax (T = 1) has the highest entropy."""
    return augment.entropy(logits).topk(n).indices


def _cutmixpick_kd_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params
) -> Tensor:
    """CutMixPick: CutMix the batch twice (a pool of 2B) and keep the B images on which the
    student (pick = s_ent) or the teacher (pick = t_ent) is most uncertain (highest entropy at
    T = 1)."""
    assert teacher is not None
    pool = augment.cutmix_pool(batch.x)
    n = len(batch.x)
    if p["pick"] == "t_ent":
        picked = highest_entropy(teacher(pool), n)
        return _kd_with_extra_view(student, teacher, batch, p, pool[picked])
    s_pool = student(pool)
    picked = highest_entropy(s_pool.detach(), n)
    return _kd_with_extra_view(student, teacher, batch, p, pool[picked], s_pool[picked])


def _strong_view(batch: StepBatch) -> Tensor:
    if batch.raw.dtype == torch.uint8 and batch.raw.dim() == 4:
        return batch.normalize(augment.strong_view(batch.raw, fill=batch.fill))
    return augment.noisy_view(batch.x)


def _crld_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params
) -> Tensor:
    """CRLD: a weak view (the default crop+flip batch) and a strong view (RandAugment + Cutout),
    four forward passes (student and teacher on both)."""
    assert teacher is not None
    strong = _strong_view(batch)
    s = student(torch.cat([batch.x, strong]))
    t = teacher(torch.cat([batch.x, strong]))
    n = len(batch.x)
    return losses.crld(
        s[:n], s[n:], t[:n], t[n:], batch.y, temperature=float(p["temperature"]),
        tau_w=float(p["tau_w"]), tau_s=float(p["tau_s"]), w_ce=float(p["w_ce"]),
        w_wv=batch.kd_scale * float(p["w_wv"]), w_cv=batch.kd_scale * float(p["w_cv"]),
    )  # fmt: skip


def _topkd_step(
    student: nn.Module, teacher: TeacherFn | None, batch: StepBatch, p: Params
) -> Tensor:
    """TopKD on top of KD: KD against the top-K-scaled teacher plus TopKD's TDL and contrastive
    terms (their combination with KD and CE is an assumption, METHODS.md 3.2-3.3)."""
    assert teacher is not None
    s = student(batch.x)
    t = losses.topk_scale(teacher(batch.x), batch.y, k=int(p["k"]), scale=float(p["topk_weight"]),
                          bias=float(p["topk_bias"]))  # fmt: skip
    topk_terms = losses.topkd(
        s, t, batch.y, k=int(p["k"]), alpha=float(p["w_pos"]), beta=float(p["w_neg"]),
        tau=float(p["con_temperature"]), w_tdl=float(p["w_tdl"]), w_con=float(p["w_con"]),
    )  # fmt: skip
    distill = p["w_kd"] * losses.kd(s, t, batch.y, temperature=float(p["temperature"])) + topk_terms
    return p["w_ce"] * losses.ce(s, t, batch.y) + batch.kd_scale * distill


METHODS: dict[str, Method] = {
    "ce": Method(_ce_step, {}, uses_teacher=False, reference="the student alone, cross-entropy"),
    # mdistiller: T = 4, CE weight 0.1, KD weight 0.9 (METHODS.md 6.1)
    "kd": Method(_kd_step, {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9, **SWITCHES, **TOPK},
                 uses_teacher=True, reference="Hinton et al. 2015", teacher_cacheable=True),
    # LSKD repository: base temperature 2, KD weight 9, CE weight 0.1 (METHODS.md 6.3)
    "lskd": Method(_kd_step, {"temperature": 2.0, "w_ce": 0.1, "w_kd": 9.0, **SWITCHES,
                              "logit_standardize": 1.0, **TOPK},
                   uses_teacher=True, reference="Sun et al. 2024, logit-standardised KD",
                   teacher_cacheable=True),
    # mdistiller DKD: CE 1, alpha 1, beta 8, T 4, 20 warm-up epochs (METHODS.md 6.2)
    "dkd": Method(_dkd_step, {"temperature": 4.0, "w_ce": 1.0, "w_tckd": 1.0, "w_nckd": 8.0,
                              "warmup": 20.0, **SWITCHES, **TOPK},
                  uses_teacher=True, reference="Zhao et al. 2022, decoupled KD",
                  teacher_cacheable=True),
    # KD-Mixup path B: T 2, alpha 1, 0.2 CE_mix + 0.8 KD, every sample mixed (METHODS.md 1.2)
    "mixup_kd": Method(_mixup_kd_step, {"temperature": 2.0, "alpha": 1.0, "partial": 1.0,
                                        "w_ce": 0.2, "w_kd": 0.8, "logit_standardize": 0.0},
                       uses_teacher=True, reference="Medina et al. 2026, student-only mixup"),
    # Zhang et al. 2018 with one lambda per sample, as mixup_kd mixes (METHODS.md 1.5)
    "mixup": Method(_mixup_step, {"alpha": 1.0, "partial": 1.0}, uses_teacher=False,
                    reference="Zhang et al. 2018, mixup without a teacher"),
    # Good-DA-in-KD: T 4, 0.1 CE + 0.9 (KD(x) + KD(x')) (METHODS.md 4.2)
    "cutmix_kd": Method(_da_kd_step, {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9,
                                      "logit_standardize": 0.0, "augmentation": "cutmix"},
                        uses_teacher=True, reference="Wang et al. 2022, CutMix in KD"),
    "da_kd": Method(_da_kd_step, {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9,
                                  "logit_standardize": 0.0, "augmentation": "crop_flip"},
                    uses_teacher=True, reference="Wang et al. 2022, KD with augmentation x'"),
    "cutmixpick_kd": Method(_cutmixpick_kd_step, {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9,
                                                  "logit_standardize": 0.0, "pick": "s_ent"},
                            uses_teacher=True, reference="Wang et al. 2022, CutMixPick"),
    # CFG.CRLD: T 4, tau_w 0.9, tau_s 0.2, CE 1, within-view 2, cross-view 0.5 (METHODS.md 2.3)
    "crld": Method(_crld_step, {"temperature": 4.0, "tau_w": 0.9, "tau_s": 0.2, "w_ce": 1.0,
                                "w_wv": 2.0, "w_cv": 0.5},
                   uses_teacher=True, reference="Zhang et al. 2024, CRLD"),
    # TopKD: every constant below is an assumption (METHODS.md 3.3)
    "topkd": Method(_topkd_step, {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9, **TOPK,
                                  "w_pos": 1.0, "w_neg": 1.0, "w_tdl": 1.0, "w_con": 0.1,
                                  "con_temperature": 0.1},
                    uses_teacher=True, reference="Wang & Zhou 2025, TopKD (assumed constants)",
                    teacher_cacheable=True),
}  # fmt: skip


def cacheable_methods() -> list[str]:
    """The methods that can train on cached teacher logits: those that ask the teacher about the
    batch alone, and those without a teacher."""
    return [name for name, m in METHODS.items() if m.teacher_cacheable or not m.uses_teacher]


def method_defaults() -> dict[str, dict[str, float | str]]:
    """The hyperparameter table `TrialConfig.from_dict` validates against."""
    return {name: dict(method.defaults) for name, method in METHODS.items()}
