"""The CIFAR-100 KD benchmark: does kdtune reproduce the published top-1 accuracies?

Each method at its paper's defaults and its pair's official ones (kdtune/benchmark.py), under the
benchmark protocol (`protocol = "cifar_benchmark"`: all 50,000 training images, 240 epochs of
SGD with the LR divided by 10 at 150, 180 and 210, the last epoch's test accuracy), 3 seeds,
printed beside the number published for the pair: KD and the teacher from RepDistiller's
README, DKD from mdistiller's, KD+LS (lskd) and DKD+LS (lsdkd) from the LSKD repository's.
The best epoch's accuracy is shown too, named as selected on the test set: what most tables
report.

On a GPU cluster (each trial is hours of a GPU; a pair's third field, its teacher's checkpoint,
skips the teacher's 240 epochs with a published one: mdistiller's cifar_teachers.tar holds them):
  python studies/cifar_benchmark.py --data-root ./data --download --gpus-per-trial 0.5 \\
      --max-concurrent-trials 8 --pairs resnet32x4:resnet8x4,wrn_40_2:wrn_16_2,vgg13:vgg8
  ... --pairs resnet32x4:resnet8x4:download/cifar_teachers/resnet32x4_vanilla/ckpt_epoch_240.pth
--smoke-test: resnet56 -> resnet20, kd and dkd, 1 epoch, on the CIFAR-100 folder given by
--data-root (the tests write a tiny one in CIFAR's own format).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from kdtune import tables
from kdtune.benchmark import published
from kdtune.cli import run_study_script
from kdtune.config import StudySpec, benchmark_recipe
from kdtune.outcome import grid_summary
from kdtune.runner import StudyResult
from kdtune.trainable import BEST_ON_TEST

METHODS = ("kd", "dkd", "lskd", "lsdkd", "crld")
SPEC = StudySpec(
    name="cifar_benchmark",
    dataset="cifar100",
    data_root="./data",
    teacher="resnet32x4",
    student="resnet8x4",
    methods=METHODS,
    grid=tuple({"method": m} for m in METHODS),
    seeds=(0, 1, 2),
    protocol="cifar_benchmark",
    objectives=(("test_acc", "max"),),
    recipe=benchmark_recipe("resnet8x4"),
    teacher_recipe=benchmark_recipe("resnet32x4"),
)
SMOKE = replace(
    SPEC, teacher="resnet56", student="resnet20", methods=("kd", "dkd"),
    grid=({"method": "kd"}, {"method": "dkd"}), seeds=(0,),
    recipe=replace(benchmark_recipe("resnet20"), epochs=1, batch_size=32),
    teacher_recipe=replace(benchmark_recipe("resnet56"), epochs=1, batch_size=32),
)  # fmt: skip
METRICS = ["test_acc", BEST_ON_TEST]


def _percent(entry: dict, metric: str) -> str:
    mean, std = entry.get(f"{metric}_mean"), entry.get(f"{metric}_std") or 0.0
    return "-" if mean is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def report(spec: StudySpec, result: StudyResult) -> list[dict]:
    """Each method's accuracy (%) over the seeds beside the published figure for the pair."""
    summary = grid_summary(spec, result.table, METRICS)
    paper = published((spec.teacher, spec.student))
    teacher_acc = result.teacher_metrics.get("teacher_test_acc")
    columns = ["method", "test acc, last epoch", "best epoch (selected on test)", "published",
               "last - published"]  # fmt: skip

    def row(name: str, last: float | None, best: str, target: float | None) -> dict[str, str]:
        gap = "-" if last is None or target is None else f"{100 * last - target:+.2f}"
        return dict(zip(columns, [name, "-" if last is None else f"{100 * last:.2f}", best,
                                  "-" if target is None else f"{target:.2f}", gap]))

    rows = [row(f"teacher {spec.teacher}", teacher_acc, "-", paper.get("teacher"))]
    for entry in summary:
        rows.append(row(entry["config"], entry.get("test_acc_mean"), _percent(entry, BEST_ON_TEST),
                        paper.get(entry["method"])))  # fmt: skip
        rows[-1]["test acc, last epoch"] = _percent(entry, "test_acc")
    print(f"\nCIFAR-100 benchmark, {spec.teacher} -> {spec.student}, {spec.recipe.epochs} epochs, "
          f"mean ± std over seeds {list(spec.trial_seeds)} (top-1 %; published: the pair's "
          "README tables, kdtune/benchmark.py):")  # fmt: skip
    print(tables.format_table(tables.to_table(rows), columns))
    result.publish([], summary=summary)
    return summary


def _pairs(text: str) -> list[tuple[str, ...]]:
    """'resnet32x4:resnet8x4:teachers/resnet32x4.pth,vgg13:vgg8' -> one tuple per pair, with
    its teacher's checkpoint where one is given."""
    pairs = [tuple(item.split(":")) for item in text.split(",") if item.strip()]
    if not pairs or any(len(pair) not in (2, 3) or not all(pair) for pair in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: write TEACHER:STUDENT[:CHECKPOINT],..., "
                                         "e.g. resnet32x4:resnet8x4,vgg13:vgg8")  # fmt: skip
    return pairs


def main(argv: list[str] | None = None) -> list[list[dict]]:
    """One study per pair (`--pairs`, else the spec's or --teacher/--student), each named after
    its pair, its students trained at the benchmark's LR for them unless --lr says otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--pairs", type=_pairs, default=None,
                     help="comma-separated TEACHER:STUDENT pairs, one study each")  # fmt: skip
    pre_args, rest = pre.parse_known_args(argv)
    if pre_args.pairs is None:
        return [run_study_script(SPEC, SMOKE, rest, description=__doc__, report=report)]
    found = []
    for teacher, student, *checkpoint in pre_args.pairs:
        lr = [] if "--lr" in rest else ["--lr", str(benchmark_recipe(student).lr)]
        own_teacher = ["--teacher-checkpoint", *checkpoint] if checkpoint else []
        per_pair = [*rest, "--teacher", teacher, "--student", student, "--name",
                    f"cifar_benchmark-{teacher}-{student}", *lr, *own_teacher]  # fmt: skip
        found.append(run_study_script(SPEC, SMOKE, per_pair, description=__doc__, report=report))
    return found


if __name__ == "__main__":
    main()
