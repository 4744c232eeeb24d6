"""Mixup-based distillation (Medina et al. 2026): does student-only mixup help KD?

The paper's comparison on one teacher: the student alone (CE), KD, mixup alone, and KD+mixup
(mixup only in the student's training, the teacher queried on the mixed inputs), the mixup
variants across mixup alpha, every configuration repeated over 3 seeds. KD and KD+mixup share
the loss 0.2 CE + 0.8 T^2 KL at T = 2 (the official code's defaults), so alpha is the only
difference. Reports accuracy, ECE, overconfidence (mean confidence - accuracy, and OE), NLL,
ECE after temperature scaling and the vicinal linearity gain (teacher - student), mean +- std.

Default: digits (embedded), CNN teacher -> MLP student, 30 trials, CPU, a few minutes.
At scale:  --dataset cifar100 --teacher resnet32x4 --student resnet8x4 --gpus-per-trial 0.25
"""

from __future__ import annotations

from dataclasses import replace

from kdtune import plots, tables
from kdtune.cli import run_study_script
from kdtune.config import Recipe, StudySpec
from kdtune.outcome import grid_summary
from kdtune.runner import StudyResult

ALPHAS = (0.2, 0.5, 1.0, 2.0)
KD = {"temperature": 2.0, "w_ce": 0.2, "w_kd": 0.8}  # mixup_kd's defaults, without the mixup
SPEC = StudySpec(
    name="mixup_kd",
    methods=("ce", "kd", "mixup", "mixup_kd"),
    grid=(
        {"method": "ce"},
        {"method": "kd", **KD},
        *({"method": "mixup", "alpha": a} for a in ALPHAS),
        *({"method": "mixup_kd", "alpha": a} for a in ALPHAS),
    ),
    seeds=(0, 1, 2),
    recipe=Recipe(epochs=30),
    teacher_recipe=Recipe(epochs=30),
)
SMOKE = replace(
    SPEC,
    grid=({"method": "ce"}, {"method": "kd", **KD}, {"method": "mixup_kd", "alpha": 1.0}),
    seeds=(0,),
    recipe=Recipe(epochs=2),
    teacher_recipe=Recipe(epochs=2),
)
METRICS = ["test_acc", "test_ece", "test_conf_gap", "test_oe", "test_nll", "test_ece_ts",
           "train_linearity_gain"]  # fmt: skip


def _effect(summary: list[dict], method: str, baseline: str) -> str:
    """One line: the best-accuracy config of `method` against `baseline`'s (means)."""
    rows = [e for e in summary if e["method"] == method and e["test_acc_mean"] is not None]
    base = next((e for e in summary if e["method"] == baseline), None)
    if not rows or base is None:
        return f"{method} vs {baseline}: not both in this run"
    best = max(rows, key=lambda e: e["test_acc_mean"])
    ratio = best["test_oe_mean"] / base["test_oe_mean"] if base["test_oe_mean"] else float("nan")
    gain = best["test_acc_mean"] - base["test_acc_mean"]
    return (f"{best['config']} vs {baseline}: accuracy {gain:+.4f}, "
            f"ECE {best['test_ece_mean'] - base['test_ece_mean']:+.4f}, "
            f"OE x{ratio:.2f}, conf-acc gap {base['test_conf_gap_mean']:+.4f} -> "
            f"{best['test_conf_gap_mean']:+.4f}")  # fmt: skip


def report(spec: StudySpec, result: StudyResult) -> list[dict]:
    summary = grid_summary(spec, result.table, METRICS)
    title = f"\nMean ± std over seeds {list(spec.trial_seeds)}:"
    print(tables.format_summary(summary, ["config"], METRICS, title=title))
    print("\nThe paper's claims at this scale (best alpha by test accuracy):")
    for method, baseline in (("mixup_kd", "ce"), ("mixup_kd", "kd"), ("mixup", "ce")):
        print("  " + _effect(summary, method, baseline))
    folder = result.study_dir
    figure = plots.errorbar_panels(
        summary, x="alpha", metrics=["test_acc", "test_ece", "test_oe", "train_linearity_gain"],
        group="method", log_x=True, path=folder / "mixup_kd.png",
        title=f"{spec.dataset}: {spec.teacher} -> {spec.student}, mean ± std over seeds",
    )  # fmt: skip
    result.publish([figure], summary=summary)
    return summary


def main(argv: list[str] | None = None) -> list[dict]:
    return run_study_script(SPEC, SMOKE, argv, description=__doc__, report=report)


if __name__ == "__main__":
    main()
