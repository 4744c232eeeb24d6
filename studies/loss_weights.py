"""Which method, temperature and loss weights? A multi-objective search, then a seed check.

Optuna's multi-objective TPE sampler searches the method (kd, dkd, lskd, crld, topkd, mixup_kd,
cutmixpick_kd) and, within it, the temperature, mixup alpha and the loss weights that method
declares as searched (kdtune/methods.py), maximising validation accuracy and minimising
validation ECE; the configurations on or near its front are measured over up to 3 seeds within
the search (front_seeds). Then every configuration on that front is trained again with 3 seeds
the search never saw, and the front of those seed means is reported beside the search's: a
check of the search's front on fresh seeds.

Default: digits (embedded), CNN teacher -> MLP student, 40 searched trials and their front's
replicates, then the front x 3 fresh seeds, CPU, a few minutes.
At scale:  --dataset cifar100 --teacher resnet32x4 --student resnet8x4 --gpus-per-trial 0.25
           --max-concurrent-trials 8 --num-samples 128 --epochs 240 --teacher-epochs 240
"""

from __future__ import annotations

from dataclasses import replace

from kdtune.cli import run_study_script
from kdtune.config import Recipe, StudySpec

SPEC = StudySpec(
    name="loss_weights",
    methods=("kd", "dkd", "lskd", "crld", "topkd", "mixup_kd", "cutmixpick_kd"),
    num_samples=40,
    # the search selects on seed 0 and replicates its front with seeds 1 and 2 (front_seeds):
    # seeds it never saw judge its choices
    reseed=(10, 11, 12),
    recipe=Recipe(epochs=30),
    teacher_recipe=Recipe(epochs=30),
)
SMOKE = replace(SPEC, num_samples=3, reseed=(10,), recipe=Recipe(epochs=2),
                teacher_recipe=Recipe(epochs=2))  # fmt: skip


def main(argv: list[str] | None = None):
    return run_study_script(SPEC, SMOKE, argv, description=__doc__)


if __name__ == "__main__":
    main()
