"""Good data augmentation in KD (Wang et al. 2022): does the teacher's T.stddev rank them?

The paper's nine schemes, as its official code defines them (kdtune.augment documents each):
identity, flip (the batch mirrored with probability 0.5), crop+flip (one crop offset and one flip
per batch), cutout (one 8x8 hole on 32x32 images), autoaugment (torchvision's CIFAR10 policy),
mixup, cutmix, CutMixPick by the teacher's entropy and CutMixPick by the student's entropy.
For each, the student is distilled with CE(x) + KD(x) + KD(x'), x' the scheme's copy of the
batch (method `da_kd`; the student-entropy pick is method `cutmixpick_kd`, pick = s_ent), 3 seeds
each. Then T.stddev of each scheme: the std across 640-sample chunks of the teacher's mean
probability vector over 10 epochs of original + augmented batches, averaged over classes (for
the student's pick, the picking student is trained with KD first, as the paper's fixed student).
The paper's claim: a lower T.stddev predicts a lower student test loss. Reports both, and their
Pearson and Spearman correlations.

Default: digits (embedded), CNN teacher -> MLP student, 27 trials, CPU, a few minutes.
At scale:  --dataset cifar100 --teacher resnet32x4 --student resnet8x4 --gpus-per-trial 0.25
"""

from __future__ import annotations

from dataclasses import replace

import torch
from scipy import stats

from kdtune import plots, tables
from kdtune.augment import AUGMENTATIONS
from kdtune.cli import run_study_script
from kdtune.config import Recipe, StudySpec
from kdtune.data import DatasetBundle
from kdtune.engine import fit, frozen
from kdtune.methods import METHODS
from kdtune.models import build_model
from kdtune.outcome import grid_summary
from kdtune.runner import StudyResult
from kdtune.study import study_teacher
from kdtune.teacher import teacher_t_stddev

STUDENT_PICK = {"method": "cutmixpick_kd", "pick": "s_ent"}  # CutMixPick by the student's entropy
SPEC = StudySpec(
    name="augmentation_quality",
    methods=("da_kd", "cutmixpick_kd"),
    grid=(*({"method": "da_kd", "augmentation": a} for a in AUGMENTATIONS), STUDENT_PICK),
    seeds=(0, 1, 2),
    recipe=Recipe(epochs=30),
    teacher_recipe=Recipe(epochs=30),
)
SMOKE = replace(
    SPEC,
    methods=("da_kd",),
    grid=tuple({"method": "da_kd", "augmentation": a} for a in ("identity", "cutmix", "flip")),
    seeds=(0,),
    recipe=Recipe(epochs=2),
    teacher_recipe=Recipe(epochs=2),
)
METRICS = ["test_nll", "test_acc", "test_ece"]
T_STDDEV_EPOCHS = 10  # as the paper's check_ce_var run


def scheme(entry: dict) -> str:
    """A grid point's scheme name: da_kd's augmentation, or the student-entropy CutMixPick."""
    return entry.get("augmentation") or f"cutmixpick_{entry['pick']}"


def student_pick_t_stddev(spec: StudySpec, data: DatasetBundle, teacher: torch.nn.Module,
                          *, epochs: int) -> float:
    """T.stddev of CutMixPick by the student's entropy: the paper picks with a fixed student
    trained by KD beforehand, so one is trained here with method `kd` at its defaults on the
    study's recipe."""
    torch.manual_seed(spec.seed)
    student = build_model(spec.student, data.num_classes, data.in_shape)
    fit(student, data, METHODS["kd"], METHODS["kd"].defaults, spec.recipe, teacher=frozen(teacher))
    return teacher_t_stddev(teacher, data, "cutmixpick", epochs=epochs, seed=spec.seed,
                            scorer=student)


def report(spec: StudySpec, result: StudyResult) -> dict:
    summary = grid_summary(spec, result.table, METRICS)
    data, teacher = study_teacher(spec)
    for entry in summary:
        entry["scheme"] = scheme(entry)
        if entry["scheme"] in AUGMENTATIONS:
            entry["t_stddev"] = teacher_t_stddev(
                teacher, data, entry["scheme"], epochs=T_STDDEV_EPOCHS, seed=spec.seed
            )
        else:
            entry["t_stddev"] = student_pick_t_stddev(spec, data, teacher, epochs=T_STDDEV_EPOCHS)
        entry["t_stddev_mean"] = entry["t_stddev"]
    summary.sort(key=lambda e: e["t_stddev"])
    title = (f"\nT.stddev (teacher only) and the student after KD with each augmentation, "
             f"mean ± std over seeds {list(spec.trial_seeds)}:")  # fmt: skip
    print(tables.format_summary(summary, ["scheme"], ["t_stddev", *METRICS], title=title))
    t_stddev = [e["t_stddev"] for e in summary]
    loss = [e["test_nll_mean"] for e in summary]
    correlation = {"pearson": float("nan"), "spearman": float("nan")}
    if len(summary) >= 3:
        correlation = {"pearson": float(stats.pearsonr(t_stddev, loss).statistic),
                       "spearman": float(stats.spearmanr(t_stddev, loss).statistic)}  # fmt: skip
    print(f"\nT.stddev vs student test loss over {len(summary)} schemes: "
          f"Pearson {correlation['pearson']:+.3f}, Spearman {correlation['spearman']:+.3f} "
          "(the paper: positive)")  # fmt: skip
    folder = result.study_dir
    figure = plots.labelled_scatter(
        t_stddev, loss, [e["scheme"] for e in summary],
        y_err=[e["test_nll_std"] or 0.0 for e in summary],
        x_label="T.stddev of the teacher (lower = more stable targets)",
        y_label="student test loss (NLL), mean ± std", path=folder / "t_stddev.png",
        title=f"Pearson {correlation['pearson']:+.2f}, Spearman {correlation['spearman']:+.2f}",
    )  # fmt: skip
    published = {f"t_stddev_{e['scheme']}": e["t_stddev"] for e in summary}
    published.update({f"{k}_t_stddev_vs_test_nll": v for k, v in correlation.items()})
    result.publish([figure], published, summary=summary)
    return {"summary": summary, **correlation}


def main(argv: list[str] | None = None) -> dict:
    return run_study_script(SPEC, SMOKE, argv, description=__doc__, report=report)


if __name__ == "__main__":
    main()
