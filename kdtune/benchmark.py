"""The CIFAR-100 KD benchmark as data: per teacher-student pair, the official configs' defaults
and the published top-1 accuracies (%) a run should match. Sources: ../shared/METHODS.md 6.2-6.4
(mdistiller's configs and README, the LSKD repository's README and log names, RepDistiller's
README). Nothing here trains or imports Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from kdtune.config import StudySpec

Pair = tuple[str, str]  # (teacher, student), kdtune's model names

# mdistiller configs/cifar100/dkd/*.yaml set DKD's beta per pair (the others keep 8); the LSKD
# repository's log names give its base temperature and KD weight per pair ("kd,vgg13,vgg8,3,9"),
# and its DKD multiplies alpha and beta by that weight with T = the base temperature.
PAIR_DEFAULTS: dict[Pair, dict[str, float]] = {
    ("resnet32x4", "resnet8x4"): {"dkd.w_nckd": 8.0, "lskd.temperature": 2.0, "lskd.w_kd": 9.0},
    ("wrn_40_2", "wrn_16_2"): {"dkd.w_nckd": 6.0, "lskd.temperature": 2.0, "lskd.w_kd": 9.0},
    ("wrn_40_2", "wrn_40_1"): {"dkd.w_nckd": 6.0, "lskd.temperature": 2.0, "lskd.w_kd": 9.0},
    ("vgg13", "vgg8"): {"dkd.w_nckd": 6.0, "lskd.temperature": 3.0, "lskd.w_kd": 9.0},
    ("vgg13", "MobileNetV2"): {"dkd.w_nckd": 6.0, "lskd.temperature": 3.0, "lskd.w_kd": 9.0},
    ("resnet56", "resnet20"): {"dkd.w_nckd": 2.0, "lskd.temperature": 2.0, "lskd.w_kd": 9.0},
    ("resnet110", "resnet32"): {"dkd.w_nckd": 2.0, "lskd.temperature": 2.0, "lskd.w_kd": 9.0},
}
# lsdkd: DKD's beta of the pair x the LSKD weight 9, at the LSKD base temperature
for _defaults in PAIR_DEFAULTS.values():
    _defaults.update({"lsdkd.w_nckd": 9.0 * _defaults["dkd.w_nckd"],
                      "lsdkd.temperature": _defaults["lskd.temperature"]})  # fmt: skip

# Published top-1 (%): teacher, KD and CRD from RepDistiller's README, DKD from mdistiller's,
# KD+LS (lskd) and DKD+LS (lsdkd) from the LSKD README. CRLD's table was not found (METHODS.md
# 2.5): it has no entry.
PUBLISHED: dict[Pair, dict[str, float]] = {
    ("resnet32x4", "resnet8x4"): {"teacher": 79.42, "ce": 72.50, "kd": 73.33, "dkd": 76.32,
                                  "lskd": 76.62, "lsdkd": 77.01},
    ("wrn_40_2", "wrn_16_2"): {"teacher": 75.61, "ce": 73.26, "kd": 74.92, "dkd": 76.24,
                               "lskd": 76.11, "lsdkd": 76.39},
    ("resnet56", "resnet20"): {"teacher": 72.34, "ce": 69.06, "kd": 70.66, "dkd": 71.97,
                               "lskd": 71.43, "lsdkd": 72.32},
    ("vgg13", "vgg8"): {"teacher": 74.64, "ce": 70.36, "kd": 72.98, "dkd": 74.68,
                        "lskd": 74.36, "lsdkd": 74.81},
    ("resnet110", "resnet32"): {"kd": 73.08, "dkd": 74.11, "lskd": 74.17, "lsdkd": 74.29},
    ("wrn_40_2", "wrn_40_1"): {"kd": 73.54, "dkd": 74.81, "lskd": 74.37, "lsdkd": 74.89},
}  # fmt: skip


def pair_defaults(spec: StudySpec) -> dict[str, float]:
    """The official per-pair values that apply to a grid study's methods and that it does not
    fix itself (a `fixed` entry, scoped or not, wins). A search keeps its ranges."""
    found = PAIR_DEFAULTS.get((spec.teacher, spec.student), {}) if spec.grid else {}
    return {key: value for key, value in found.items()
            if key.split(".")[0] in spec.methods and key not in spec.fixed
            and key.split(".")[1] not in spec.fixed}  # fmt: skip


def with_pair_defaults(spec: StudySpec) -> StudySpec:
    """The spec with its pair's official defaults fixed (where it leaves them open)."""
    found = pair_defaults(spec)
    return dataclasses.replace(spec, fixed={**found, **spec.fixed}) if found else spec


def published(pair: Pair) -> Mapping[str, float]:
    return PUBLISHED.get(pair, {})
