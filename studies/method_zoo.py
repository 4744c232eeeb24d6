"""Every method at its paper defaults, same budget, 3 seeds: the papers' table, with calibration.

One teacher; the student trained by each method of kdtune.methods with the hyperparameters its
paper (or official code) uses, for the same epochs, batch size and schedule, each with 3 seeds.
Prints accuracy, ECE, NLL, overconfidence (OE) and ECE after temperature scaling (mean +- std)
under the teacher's own row, and draws them as bar charts.

Default: digits (embedded), CNN teacher -> MLP student, 30 trials, CPU, a few minutes.
At scale:  --dataset cifar100 --teacher resnet32x4 --student resnet8x4 --epochs 240
           --teacher-epochs 240 --gpus-per-trial 0.25 --max-concurrent-trials 8
"""

from __future__ import annotations

from dataclasses import replace

from kdtune import plots, tables
from kdtune.cli import run_study_script
from kdtune.config import Recipe, StudySpec
from kdtune.outcome import grid_summary
from kdtune.runner import StudyResult

METHODS = ("ce", "kd", "lskd", "dkd", "mixup", "mixup_kd", "cutmix_kd", "cutmixpick_kd", "crld",
           "topkd")  # fmt: skip
SPEC = StudySpec(
    name="method_zoo",
    methods=METHODS,
    grid=tuple({"method": m} for m in METHODS),
    seeds=(0, 1, 2),
    recipe=Recipe(epochs=30),
    teacher_recipe=Recipe(epochs=30),
)
SMOKE = replace(SPEC, grid=({"method": "ce"}, {"method": "dkd"}), seeds=(0,),
                recipe=Recipe(epochs=2), teacher_recipe=Recipe(epochs=2))  # fmt: skip
METRICS = ["test_acc", "test_ece", "test_nll", "test_oe", "test_ece_ts"]


def report(spec: StudySpec, result: StudyResult) -> list[dict]:
    summary = grid_summary(spec, result.table, METRICS)
    teacher = {"config": f"teacher ({spec.teacher})", "n": 1}
    for metric in METRICS:
        teacher[f"{metric}_mean"] = result.teacher_metrics.get(f"teacher_{metric}")
    title = (f"\n{spec.dataset}, {spec.teacher} -> {spec.student}, {spec.recipe.epochs} epochs, "
             f"mean ± std over seeds {list(spec.trial_seeds)}:")  # fmt: skip
    print(tables.format_summary([teacher, *summary], ["config"], METRICS, title=title))
    folder = result.study_dir
    panels = ["test_acc", "test_ece", "test_ece_ts", "test_nll"]
    figure = plots.bar_panels(
        summary, label="config", metrics=panels, path=folder / "method_zoo.png",
        title=title.strip().rstrip(":"),
        reference={m: v for m in panels if (v := teacher.get(f"{m}_mean")) is not None},
    )  # fmt: skip
    result.publish([figure], summary=summary)
    return summary


def main(argv: list[str] | None = None) -> list[dict]:
    return run_study_script(SPEC, SMOKE, argv, description=__doc__, report=report)


if __name__ == "__main__":
    main()
