"""Good data augmentation in KD (Wang et al. 2022): does the teacher's T.stddev rank them?

For each augmentation x' of kdtune.augment.AUGMENTATIONS (identity, flip, crop+flip, cutout,
mixup, cutmix, cutmixpick), the student is distilled with CE(x) + KD(x) + KD(x') (method
`da_kd`), 3 seeds each. Then, from the teacher alone, T.stddev of each augmentation: the std
across 640-sample chunks of the teacher's mean probability vector over 10 epochs of
original + augmented batches, averaged over classes. The paper's claim: a lower T.stddev
predicts a lower student test loss. Reports both, and their Pearson and Spearman correlations.

Default: digits (embedded), CNN teacher -> MLP student, 21 trials, CPU, a few minutes.
At scale:  --dataset cifar100 --teacher resnet32x4 --student resnet8x4 --gpus-per-trial 0.25
"""

from __future__ import annotations

from dataclasses import replace

from scipy import stats

from kdtune import plots, results
from kdtune.augment import AUGMENTATIONS
from kdtune.cli import run_study_script
from kdtune.config import Recipe, StudySpec
from kdtune.outcome import grid_summary
from kdtune.runner import StudyResult
from kdtune.study import study_teacher
from kdtune.teacher import teacher_t_stddev

SPEC = StudySpec(
    name="augmentation_quality",
    methods=("da_kd",),
    grid=tuple({"method": "da_kd", "augmentation": a} for a in AUGMENTATIONS),
    seeds=(0, 1, 2),
    recipe=Recipe(epochs=30),
    teacher_recipe=Recipe(epochs=30),
)
SMOKE = replace(
    SPEC,
    grid=tuple({"method": "da_kd", "augmentation": a} for a in ("identity", "cutmix", "flip")),
    seeds=(0,),
    recipe=Recipe(epochs=2),
    teacher_recipe=Recipe(epochs=2),
)
METRICS = ["test_nll", "test_acc", "test_ece"]
T_STDDEV_EPOCHS = 10  # as the paper's check_ce_var run


def report(spec: StudySpec, result: StudyResult) -> dict:
    summary = grid_summary(spec, result.table, METRICS)
    data, teacher = study_teacher(spec)
    for entry in summary:
        entry["t_stddev"] = teacher_t_stddev(teacher, data, entry["augmentation"],
                                             epochs=T_STDDEV_EPOCHS, seed=spec.seed)  # fmt: skip
        entry["t_stddev_mean"] = entry["t_stddev"]
    summary.sort(key=lambda e: e["t_stddev"])
    title = (f"\nT.stddev (teacher only) and the student after KD with each augmentation, "
             f"mean ± std over seeds {list(spec.trial_seeds)}:")  # fmt: skip
    print(results.format_summary(summary, ["augmentation"], ["t_stddev", *METRICS], title=title))
    t_stddev = [e["t_stddev"] for e in summary]
    loss = [e["test_nll_mean"] for e in summary]
    correlation = {"pearson": float("nan"), "spearman": float("nan")}
    if len(summary) >= 3:
        correlation = {"pearson": float(stats.pearsonr(t_stddev, loss).statistic),
                       "spearman": float(stats.spearmanr(t_stddev, loss).statistic)}  # fmt: skip
    print(f"\nT.stddev vs student test loss over {len(summary)} augmentations: "
          f"Pearson {correlation['pearson']:+.3f}, Spearman {correlation['spearman']:+.3f} "
          "(the paper: positive)")  # fmt: skip
    folder = result.study_dir
    figure = plots.labelled_scatter(
        t_stddev, loss, [e["augmentation"] for e in summary],
        y_err=[e["test_nll_std"] or 0.0 for e in summary],
        x_label="T.stddev of the teacher (lower = more stable targets)",
        y_label="student test loss (NLL), mean ± std", path=folder / "t_stddev.png",
        title=f"Pearson {correlation['pearson']:+.2f}, Spearman {correlation['spearman']:+.2f}",
    )  # fmt: skip
    metrics = {f"t_stddev_{e['augmentation']}": e["t_stddev"] for e in summary}
    metrics.update({f"{k}_t_stddev_vs_test_nll": v for k, v in correlation.items()})
    result.publish([figure], metrics, summary=summary)
    return {"summary": summary, **correlation}


def main(argv: list[str] | None = None) -> dict:
    return run_study_script(SPEC, SMOKE, argv, description=__doc__, report=report)


if __name__ == "__main__":
    main()
