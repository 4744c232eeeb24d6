"""Training methods: how one step combines views, teacher calls and a loss, and the
hyperparameters it takes, declared once beside it.

A method is a step function plus its hyperparameter declarations (kdtune.hparams.HParam: type,
paper default and its source, valid range, search range and scale, meaning). The engine calls
`step(student, teacher, batch, params)` with `params` resolved and typed from those declarations
(ints as ints, switches as booleans) and back-propagates the returned loss; it never looks inside
a method. `student` and `teacher` are callables returning float32 logits; `teacher` is frozen (no
gradient), or None for methods without one. Distillation terms are multiplied by
`batch.kd_scale`, the warm-up factor the engine computes from a method's `warmup` hyperparameter.

A new method touches this module (its step and declarations, then `register`) and, for a new
objective, kdtune/losses.py: nothing else (tests/test_contract.py proves it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kdtune import augment, losses
from kdtune.hparams import KD_TEMPERATURE, RAMP_EPOCHS, HParam, Value

Network = Callable[[Tensor], Tensor]  # inputs -> float32 logits
TeacherFn = Network
Params = Mapping[str, Any]  # a method's resolved hyperparameters, typed by their declarations


@dataclass(frozen=True)
class StepBatch:
    x: Tensor  # normalised float inputs, the default training augmentation applied
    y: Tensor  # int64 labels
    num_classes: int
    raw: Tensor  # the same batch before normalisation (uint8 images), for image-space views
    normalize: Callable[[Tensor], Tensor]
    fill: Tensor  # the mean pixel (uint8 per channel), what Cutout paints holes with
    kd_scale: float = 1.0  # warm-up factor of the distillation terms, set by the engine
    # the batch before the default crop and flip (uint8), and that crop's padding and flip, for
    # a view that crops and flips on its own draw (CRLD's strong view); None: `raw` is un-cropped
    source: Tensor | None = None
    crop_padding: int = 0
    flip: bool = False


StepFn = Callable[[Network, "TeacherFn | None", StepBatch, Params], Tensor]


@dataclass(frozen=True)
class Method:
    step: StepFn
    hparams: tuple[HParam, ...]  # every hyperparameter the step reads, declared once
    uses_teacher: bool
    reference: str  # the paper (and code) the method follows
    summary: str  # what one training step does, in one sentence (the README's method table)
    # the teacher sees only the step's batch (`batch.x`), so its logits can be looked up by
    # sample index instead of computed (`StudySpec.cache_teacher_logits`)
    teacher_cacheable: bool = False

    @property
    def defaults(self) -> dict[str, Value]:
        return {h.name: h.default for h in self.hparams}


# What each hyperparameter name means, its type and valid range: one declaration per name.
# Methods take these with their own default (`.at`), its source and their search range.
TEMPERATURE = HParam("temperature", float, 4.0, low=0.0, low_open=True, log=True,
                     meaning="softmax temperature T of the distillation terms (a base "
                             "temperature on z-scored logits when logit_standardize is on)",
                     role=KD_TEMPERATURE)
W_CE = HParam("w_ce", float, 1.0, low=0.0,
              meaning="weight of the cross-entropy on the labels (mixed labels under mixup)")
W_KD = HParam("w_kd", float, 1.0, low=0.0,
              meaning="weight of the distillation term T^2 KL(p_teacher || p_student)")
LOGIT_STANDARDIZE = HParam("logit_standardize", bool, False,
                           meaning="z-score each sample's student and teacher logits before "
                                   "distilling (logit-standardised KD)")
TOPK_SCALE = HParam("topk_scale", bool, False,
                    meaning="rescale the teacher's top-K logits before distilling (TopKD's "
                            "top-K scaling module)")
K = HParam("k", int, 5, low=1.0,
           meaning="K: how many of the teacher's largest (and smallest) logits TopKD scales "
                   "and groups")
TOPK_WEIGHT = HParam("topk_weight", float, 2.0, low=0.0, low_open=True,
                     meaning="multiplier of the teacher's top-1 logit; rank r of K gets "
                             "topk_weight^((K - r)/(K - 1)) (assumed form)")
TOPK_BIAS = HParam("topk_bias", float, 0.1, low=0.0,
                   meaning="shift of the scaled logits, as a fraction of mean(top-K) - "
                           "mean(others) (assumed form)")
WARMUP = HParam("warmup", int, 0, low=0.0, role=RAMP_EPOCHS,
                meaning="epochs over which the distillation terms ramp linearly to full weight")
W_TCKD = HParam("w_tckd", float, 1.0, low=0.0, log=True,
                meaning="weight of DKD's target-class term TCKD (alpha in the paper)")
W_NCKD = HParam("w_nckd", float, 8.0, low=0.0, log=True,
                meaning="weight of DKD's non-target-class term NCKD (beta in the paper)")
ALPHA = HParam("alpha", float, 1.0, low=0.0, log=True,
               meaning="mixup's Beta(alpha, alpha) concentration of lambda; 0 = no mixing")
PARTIAL = HParam("partial", float, 1.0, low=0.0, high=1.0,
                 meaning="fraction of the samples that are mixed (the others keep lambda = 1)")
AUGMENTATION = HParam("augmentation", str, "crop_flip", choices=tuple(augment.AUGMENTATIONS),
                      meaning="the augmentation that makes the extra view x' of every batch")
PICK = HParam("pick", str, "s_ent", choices=("s_ent", "t_ent"),
              meaning="whose entropy picks CutMixPick's half of the pool: the student's "
                      "(s_ent) or the teacher's (t_ent)")
TAU_W = HParam("tau_w", float, 0.9, low=0.0, high=1.0,
               meaning="within-view KD only where the teacher's weak-view confidence >= tau_w")
TAU_S = HParam("tau_s", float, 0.2, low=0.0, high=1.0,
               meaning="cross-view KD only where the teacher's strong-view confidence >= tau_s")
W_WV = HParam("w_wv", float, 2.0, low=0.0, log=True,
              meaning="weight of CRLD's within-view KD terms")
W_CV = HParam("w_cv", float, 0.5, low=0.0, log=True,
              meaning="weight of CRLD's cross-view KD terms")
W_POS = HParam("w_pos", float, 1.0, low=0.0,
               meaning="weight of the top-K group in TopKD's decoupled loss (alpha in TopKD)")
W_NEG = HParam("w_neg", float, 1.0, low=0.0,
               meaning="weight of the bottom-K group in TopKD's decoupled loss (beta in TopKD)")
W_TDL = HParam("w_tdl", float, 1.0, low=0.0, log=True,
               meaning="weight of TopKD's top-K decoupled loss")
W_CON = HParam("w_con", float, 0.1, low=0.0, log=True,
               meaning="weight of TopKD's instance-level contrastive loss")
CON_TEMPERATURE = HParam("con_temperature", float, 0.1, low=0.0, low_open=True,
                         meaning="temperature of TopKD's contrastive logit similarity")  # fmt: skip

def _teacher_target(teacher_logits: Tensor, y: Tensor, p: Params) -> Tensor:
    if p.get("topk_scale"):
        return losses.topk_scale(teacher_logits, y, k=p["k"], topk_weight=p["topk_weight"],
                                 topk_bias=p["topk_bias"])  # fmt: skip
    return teacher_logits


def _kd_term(student_logits: Tensor, teacher_logits: Tensor, y: Tensor, p: Params) -> Tensor:
    loss = losses.lskd if p.get("logit_standardize") else losses.kd
    return loss(student_logits, teacher_logits, y, temperature=p["temperature"])


def _ce_step(student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    return losses.ce(student(batch.x), None, batch.y)


def _kd_step(student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    assert teacher is not None
    s, t = student(batch.x), _teacher_target(teacher(batch.x), batch.y, p)
    return p["w_ce"] * losses.ce(s, t, batch.y) + batch.kd_scale * p["w_kd"] * _kd_term(
        s, t, batch.y, p
    )


def _dkd_step(student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    assert teacher is not None
    s, t = student(batch.x), _teacher_target(teacher(batch.x), batch.y, p)
    # standardisation is the distillation term's alone: the CE sees the raw logits, as in the
    # LSKD repository's DKD (z-scored logits in the CE would change the loss by ~1 nat)
    zs, zt = (losses.standardize(s), losses.standardize(t)) if p["logit_standardize"] else (s, t)
    decoupled = losses.dkd(zs, zt, batch.y, temperature=p["temperature"], w_tckd=p["w_tckd"],
                           w_nckd=p["w_nckd"])  # fmt: skip
    return p["w_ce"] * losses.ce(s, t, batch.y) + batch.kd_scale * decoupled


def _mixup_step(student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    """Mixup alone (Zhang et al. 2018): CE on mixed inputs and mixed labels, no teacher."""
    one_hot = F.one_hot(batch.y, batch.num_classes).float()
    x, targets = augment.mixup(batch.x, one_hot, alpha=p["alpha"], partial=p["partial"])
    return losses.ce(student(x), None, targets)


def _mixup_kd_step(
    student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params
) -> Tensor:
    """Mixup on the student's inputs only; the frozen teacher is queried on the same mixed batch."""
    assert teacher is not None
    one_hot = F.one_hot(batch.y, batch.num_classes).float()
    x, targets = augment.mixup(batch.x, one_hot, alpha=p["alpha"], partial=p["partial"])
    s, t = student(x), teacher(x)
    return p["w_ce"] * losses.ce(s, t, targets) + batch.kd_scale * p["w_kd"] * _kd_term(
        s, t, targets, p
    )


def _kd_with_extra_view(
    student: Network, teacher: TeacherFn, batch: StepBatch, p: Params, extra: Tensor,
    extra_student: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Good-DA-in-KD's loss: w_ce CE(x) + w_kd [KD on x + KD on the augmented copy x'], where
    the teacher's output on x' is the target (mixed labels are not used). The student sees x and
    x' in forward passes of their own, as the official code does: in one pass on both, the
    student's BatchNorm would normalise each view with the statistics of the two together."""
    s_x = student(batch.x)
    s_extra = extra_student if extra_student is not None else student(extra)
    t_x, t_extra = teacher(batch.x), teacher(extra)
    distill = _kd_term(s_x, t_x, batch.y, p) + _kd_term(s_extra, t_extra, batch.y, p)
    return p["w_ce"] * losses.ce(s_x, t_x, batch.y) + batch.kd_scale * p["w_kd"] * distill


def _da_kd_step(student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    """Good-DA-in-KD with x' = any augmentation of `augment.AUGMENTATIONS` (CutMixPick picks
    by the teacher's entropy here), so a study can train one student per augmentation."""
    assert teacher is not None
    extra = augment.AUGMENTATIONS[p["augmentation"]](batch.x, teacher, normalize=batch.normalize)
    return _kd_with_extra_view(student, teacher, batch, p, extra)


def highest_entropy(logits: Tensor, n: int) -> Tensor:
    """Indices of the n rows whose softmax (T = 1) has the highest entropy."""
    return augment.entropy(logits).topk(n).indices


def _cutmixpick_kd_step(
    student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params
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
        source = batch.raw if batch.source is None else batch.source
        return batch.normalize(augment.strong_view(source, fill=batch.fill,
                                                   padding=batch.crop_padding, flip=batch.flip))
    return augment.noisy_view(batch.x)


def _crld_step(student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    """CRLD: a weak view (the default crop+flip batch) and a strong view (RandAugment + Cutout),
    four forward passes (student and teacher on both)."""
    assert teacher is not None
    strong = _strong_view(batch)
    # the student's views in passes of their own (its BatchNorm batch statistics per view, as
    # in CRLD's code); the teacher is in eval mode, where one pass on both gives the same
    t = teacher(torch.cat([batch.x, strong]))
    n = len(batch.x)
    return losses.crld(
        student(batch.x), student(strong), t[:n], t[n:], batch.y, temperature=p["temperature"],
        tau_w=p["tau_w"], tau_s=p["tau_s"], w_ce=p["w_ce"], w_wv=batch.kd_scale * p["w_wv"],
        w_cv=batch.kd_scale * p["w_cv"],
    )  # fmt: skip


def _topkd_step(student: Network, teacher: TeacherFn | None, batch: StepBatch, p: Params) -> Tensor:
    """TopKD on top of KD: KD against the top-K-scaled teacher plus TopKD's TDL and contrastive
    terms (their combination with KD and CE is an assumption, METHODS.md 3.2-3.3)."""
    assert teacher is not None
    s = student(batch.x)
    t = losses.topk_scale(teacher(batch.x), batch.y, k=p["k"], topk_weight=p["topk_weight"],
                          topk_bias=p["topk_bias"])  # fmt: skip
    topk_terms = losses.topkd(
        s, t, batch.y, k=p["k"], w_pos=p["w_pos"], w_neg=p["w_neg"],
        con_temperature=p["con_temperature"], w_tdl=p["w_tdl"], w_con=p["w_con"],
    )  # fmt: skip
    distill = p["w_kd"] * losses.kd(s, t, batch.y, temperature=p["temperature"]) + topk_terms
    return p["w_ce"] * losses.ce(s, t, batch.y) + batch.kd_scale * distill


# Where the defaults come from (../shared/METHODS.md holds the sources).
MDISTILLER_KD = "mdistiller CFG.KD (METHODS.md 6.1)"
LSKD_REPO = "LSKD repository, --base-temp 2 --kd-weight 9 (METHODS.md 6.3)"
MDISTILLER_DKD = "mdistiller CFG.DKD (METHODS.md 6.2)"
LSKD_DKD = ("LSKD repository, DKD --base-temp 2 --kd-weight 9: T = 2, alpha and beta x 9 "
            "(METHODS.md 6.3)")
KD_MIXUP = "KD-Mixup code, benchmark.py path B (METHODS.md 1.2)"
GOOD_DA = "Good-DA-in-KD scripts (METHODS.md 4.2)"
CFG_CRLD = "CFG.CRLD (METHODS.md 2.3)"
TOPKD_GUESS = "an assumption, TopKD's constants are unpublished (METHODS.md 3.3)"


def _kd_family(temperature: float, w_ce: float, w_kd: float, source: str,
               t_search: tuple[float, float] = (1.0, 16.0),
               w_kd_search: tuple[float, float] = (0.1, 1.0)) -> tuple[HParam, ...]:  # fmt: skip
    """Temperature and the CE/KD weights, searched, as every KD-style method takes them."""
    return (TEMPERATURE.at(temperature, source, search=t_search),
            W_CE.at(w_ce, source, search=(0.0, 1.0)),
            W_KD.at(w_kd, source, search=w_kd_search))  # fmt: skip


def _switches(standardize: bool, source: str) -> tuple[HParam, ...]:
    """The logit-standardisation and top-K-scaling switches (with TopKD's constants) that kd,
    lskd and dkd take."""
    return (LOGIT_STANDARDIZE.at(standardize, source), TOPK_SCALE.at(False, "off unless asked"),
            K.at(5, TOPKD_GUESS), TOPK_WEIGHT.at(2.0, TOPKD_GUESS),
            TOPK_BIAS.at(0.1, TOPKD_GUESS))  # fmt: skip


def _good_da(augmentation: HParam) -> tuple[HParam, ...]:
    return (*_kd_family(4.0, 0.1, 0.9, GOOD_DA), LOGIT_STANDARDIZE.at(False, GOOD_DA),
            augmentation)  # fmt: skip


METHODS: dict[str, Method] = {
    "ce": Method(_ce_step, (), uses_teacher=False, reference="baseline",
                 summary="the student alone, cross-entropy on the labels"),
    "kd": Method(_kd_step, (*_kd_family(4.0, 0.1, 0.9, MDISTILLER_KD),
                            *_switches(False, "off: plain KD")),
                 uses_teacher=True, reference="Hinton et al. 2015; mdistiller",
                 summary="w_ce CE + w_kd T^2 KL(p_t^T ‖ p_s^T)", teacher_cacheable=True),
    "lskd": Method(_kd_step, (*_kd_family(2.0, 0.1, 9.0, LSKD_REPO, t_search=(1.0, 8.0),
                                          w_kd_search=(1.0, 12.0)),
                              *_switches(True, LSKD_REPO)),
                   uses_teacher=True, reference="Sun et al. 2024 (LSKD repository)",
                   summary="`kd` on per-sample z-scored logits (T is a base temperature)",
                   teacher_cacheable=True),
    "dkd": Method(_dkd_step, (TEMPERATURE.at(4.0, MDISTILLER_DKD, search=(1.0, 16.0)),
                              W_CE.at(1.0, MDISTILLER_DKD),
                              W_TCKD.at(1.0, MDISTILLER_DKD, search=(0.25, 4.0)),
                              W_NCKD.at(8.0, MDISTILLER_DKD, search=(1.0, 12.0)),
                              WARMUP.at(20, MDISTILLER_DKD), *_switches(False, "off: plain DKD")),
                  uses_teacher=True, reference="Zhao et al. 2022; mdistiller",
                  summary="w_ce CE + ramp(epoch) (w_tckd TCKD + w_nckd NCKD), the ramp linear "
                          "over `warmup` epochs", teacher_cacheable=True),
    "lsdkd": Method(_dkd_step, (TEMPERATURE.at(2.0, LSKD_DKD, search=(1.0, 8.0)),
                                W_CE.at(1.0, LSKD_DKD),
                                W_TCKD.at(9.0, LSKD_DKD, search=(1.0, 36.0)),
                                W_NCKD.at(72.0, LSKD_DKD, search=(8.0, 144.0)),
                                WARMUP.at(20, MDISTILLER_DKD), *_switches(True, LSKD_DKD)),
                    uses_teacher=True, reference="Sun et al. 2024 (LSKD repository's DKD)",
                    summary="`dkd` with its decoupled terms on per-sample z-scored logits (the CE "
                            "on the raw ones; T is a base temperature)", teacher_cacheable=True),
    "mixup": Method(_mixup_step, (ALPHA.at(1.0, "Zhang et al. 2018 (METHODS.md 1.5)",
                                           search=(0.1, 2.0)),
                                  PARTIAL.at(1.0, "every sample mixed")),
                    uses_teacher=False, reference="Zhang et al. 2018",
                    summary="the student alone on mixup: CE on mixed inputs and mixed labels "
                            "(lambda ~ Beta(alpha, alpha) per sample), no teacher"),
    "mixup_kd": Method(_mixup_kd_step, (*_kd_family(2.0, 0.2, 0.8, KD_MIXUP),
                                        ALPHA.at(1.0, KD_MIXUP, search=(0.1, 2.0)),
                                        PARTIAL.at(1.0, KD_MIXUP),
                                        LOGIT_STANDARDIZE.at(False, KD_MIXUP)),
                       uses_teacher=True, reference="Medina et al. 2026 (official code, path B)",
                       summary="mixup of the student's inputs only (lambda ~ Beta(alpha, alpha) "
                               "per sample, a `partial` fraction mixed); the teacher is queried "
                               "on the same mixed inputs; w_ce CE on mixed labels + w_kd KD"),
    "cutmix_kd": Method(_da_kd_step, _good_da(AUGMENTATION.at("cutmix", GOOD_DA)),
                        uses_teacher=True, reference="Wang et al. 2022 (Good-DA-in-KD code)",
                        summary="w_ce CE(x) + w_kd [KD(x) + KD(x')], x' = CutMix(x) (one lambda "
                                "~ Beta(1, 1) per batch); the teacher's output on x' is the "
                                "target"),
    "da_kd": Method(_da_kd_step, _good_da(AUGMENTATION.at(
                        "crop_flip", GOOD_DA, search=tuple(augment.AUGMENTATIONS))),
                    uses_teacher=True, reference="Wang et al. 2022 (their DA schemes)",
                    summary="as `cutmix_kd` with x' = any `augmentation` (`cutmixpick` picks by "
                            "the teacher's entropy)"),
    "cutmixpick_kd": Method(_cutmixpick_kd_step,
                            (*_kd_family(4.0, 0.1, 0.9, GOOD_DA),
                             LOGIT_STANDARDIZE.at(False, GOOD_DA),
                             PICK.at("s_ent", GOOD_DA, search=("s_ent", "t_ent"))),
                            uses_teacher=True, reference="Wang et al. 2022 (CutMixPick)",
                            summary="as `cutmix_kd`, x' = the half of a 2x CutMix pool with the "
                                    "highest entropy of the student (s_ent) or teacher (t_ent)"),
    "crld": Method(_crld_step, (TEMPERATURE.at(4.0, CFG_CRLD, search=(1.0, 8.0)),
                                TAU_W.at(0.9, CFG_CRLD, search=(0.5, 0.99)),
                                TAU_S.at(0.2, CFG_CRLD, search=(0.0, 0.6)),
                                W_CE.at(1.0, CFG_CRLD), W_WV.at(2.0, CFG_CRLD, search=(0.5, 4.0)),
                                W_CV.at(0.5, CFG_CRLD, search=(0.1, 2.0))),
                   uses_teacher=True, reference="Zhang et al. 2024 (CRLD code copies)",
                   summary="weak view (crop+flip) and strong view (+ RandAugment + Cutout); CE on "
                           "both + w_wv within-view KD gated by the teacher's weak-view "
                           "confidence >= tau_w + w_cv cross-view KD gated by its strong-view "
                           "confidence >= tau_s"),
    "topkd": Method(_topkd_step, (*_kd_family(4.0, 0.1, 0.9, MDISTILLER_KD),
                                  K.at(5, TOPKD_GUESS, search=(2, 10)),
                                  TOPK_WEIGHT.at(2.0, TOPKD_GUESS, search=(1.0, 4.0)),
                                  TOPK_BIAS.at(0.1, TOPKD_GUESS), W_POS.at(1.0, TOPKD_GUESS),
                                  W_NEG.at(1.0, TOPKD_GUESS),
                                  W_TDL.at(1.0, TOPKD_GUESS, search=(0.1, 2.0)),
                                  W_CON.at(0.1, TOPKD_GUESS, search=(0.01, 1.0)),
                                  CON_TEMPERATURE.at(0.1, TOPKD_GUESS)),
                    uses_teacher=True, reference="Wang & Zhou 2025 (assumed constants)",
                    summary="KD against top-K-scaled teacher logits + TopKD's top-K decoupled "
                            "loss + instance-level contrastive loss", teacher_cacheable=True),
}  # fmt: skip


def register(name: str, method: Method) -> None:
    """Add a method defined outside kdtune (a script, a notebook, a test): studies then search,
    validate, train and record it like any other. (A study ships its methods' code to the Ray
    workers by value, so they need not import the module that defines it.)"""
    if name in METHODS:
        raise ValueError(f"method {name!r} exists already; pick another name")
    METHODS[name] = method


def declarations() -> dict[str, tuple[HParam, ...]]:
    """method -> its hyperparameter declarations (what configs are validated against)."""
    return {name: method.hparams for name, method in METHODS.items()}


def cacheable_methods() -> list[str]:
    """The methods that can train on cached teacher logits: those that ask the teacher about the
    batch alone, and those without a teacher."""
    return [name for name, m in METHODS.items() if m.teacher_cacheable or not m.uses_teacher]
