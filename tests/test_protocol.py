"""The CIFAR-100 benchmark protocol: its recipe preset, its data (no validation split), what a
trial reports under it, and the checks that keep test metrics from being selected on."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from kdtune.config import ConfigError, Recipe, StudySpec, benchmark_recipe
from kdtune.trainable import BEST_ON_TEST, TrialContext, run_trial

TEST_OBJECTIVES = [["test_acc", "max"], ["test_ece", "min"]]


def test_the_preset_is_the_benchmarks_recipe_and_the_file_wins_over_it():
    spec = StudySpec.from_dict({"name": "b", "protocol": "cifar_benchmark", "student": "resnet8x4",
                                "teacher": "resnet32x4", "objectives": TEST_OBJECTIVES,
                                "recipe": {"epochs": 3}})  # fmt: skip
    assert spec.recipe == Recipe(epochs=3, batch_size=64, lr=0.05, optimizer="sgd",
                                 schedule="step", weight_decay=5e-4)  # fmt: skip
    assert spec.teacher_recipe == benchmark_recipe("resnet32x4")
    assert spec.teacher_recipe.epochs == 240
    assert benchmark_recipe("MobileNetV2").lr == 0.01 and benchmark_recipe("ShuffleV2").lr == 0.01
    assert not spec.early_stopping  # a search under this protocol runs every trial to the end
    plain = StudySpec.from_dict({"name": "s", "recipe": {"epochs": 3}})
    assert plain.recipe == Recipe(epochs=3) and plain.protocol == "search"


@pytest.mark.parametrize(("changes", "field"), [
    ({}, "objectives: val_acc needs a validation split"),
    ({"objectives": [["test_acc", "max"], ["test_ece_ts", "min"]]}, "objectives: test_ece_ts"),
    ({"objectives": TEST_OBJECTIVES, "scheduler": "moasha"}, "scheduler: MO-ASHA would stop"),
    ({"protocol": "benchmark"}, "protocol: "),
])  # fmt: skip
def test_nothing_is_selected_on_test_under_the_benchmark_protocol(changes, field):
    with pytest.raises(ConfigError, match=field):
        StudySpec.from_dict({"name": "b", "protocol": "cifar_benchmark", **changes})


def test_the_protocol_flag_brings_the_preset_under_the_flags_given():
    import studies.temperature_sweep as study
    from kdtune.cli import add_study_flags, spec_from_args

    parser = argparse.ArgumentParser()
    add_study_flags(parser, study.SPEC, study.SMOKE)

    def spec(*flags: str) -> StudySpec:
        args = parser.parse_args(["--protocol", "cifar_benchmark", "--objectives",
                                  "test_acc:max", *flags])  # fmt: skip
        return spec_from_args(args, study.SPEC, study.SMOKE)

    assert spec().recipe == benchmark_recipe(study.SPEC.student)
    assert spec("--epochs", "7").recipe == dataclasses.replace(benchmark_recipe("mlp"), epochs=7)
    smoke = spec("--smoke-test")
    assert smoke.recipe.epochs == study.SMOKE.recipe.epochs and smoke.recipe.schedule == "step"


def test_without_holdout_every_training_image_is_trained_on(digits):
    data = digits.without_holdout()
    assert len(data.train) == len(digits.train) + len(digits.val) and len(data.val) == 0
    assert data.test is digits.test and data.monitored == ("test", digits.test)
    assert digits.monitored == ("val", digits.val)


def test_a_benchmark_trial_reports_test_metrics_each_epoch_and_its_best_epoch(digits):
    """No validation split: each epoch is evaluated on test, the last report carries the best
    epoch's test accuracy under a name that says so, and no temperature scaling (it would be
    fitted on test)."""
    context = TrialContext(data=digits.without_holdout(), teacher=None, student_model="mlp",
                           device="cpu")  # fmt: skip
    reports: list[dict] = []
    states: list[dict] = []

    def report(metrics: dict, state: dict | None) -> None:
        reports.append(metrics)
        states.extend([state] if state else [])

    run_trial({"method": "ce", "epochs": 4, "lr": 0.5}, context, report)
    assert [r["epoch"] for r in reports] == [1, 2, 3, 4]
    assert all("test_acc" in r and not any(k.startswith("val_") for k in r) for r in reports)
    last = reports[-1]
    assert last[BEST_ON_TEST] == max(r["test_acc"] for r in reports)
    assert states[-1][BEST_ON_TEST] == last[BEST_ON_TEST]  # a resumed trial carries it on
    assert not any(k.endswith("_ts") for k in last) and "temperature_ts" not in last


def test_a_pairs_official_defaults_apply_to_a_grid_unless_the_spec_fixes_them():
    """mdistiller's DKD beta is 6 for the WRN pairs and 2 for resnet56 -> resnet20; the LSKD
    repository's DKD multiplies it by 9 at base temperature 2."""
    from kdtune.benchmark import pair_defaults, with_pair_defaults

    grid = ({"method": "dkd"}, {"method": "lsdkd"}, {"method": "kd"})
    spec = StudySpec(name="b", teacher="wrn_40_2", student="wrn_16_2", methods=("dkd", "lsdkd",
                     "kd"), grid=grid)  # fmt: skip
    assert pair_defaults(spec) == {"dkd.w_nckd": 6.0, "lsdkd.w_nckd": 54.0,
                                   "lsdkd.temperature": 2.0}  # fmt: skip
    small = dataclasses.replace(spec, teacher="resnet56", student="resnet20")
    assert with_pair_defaults(small).fixed["dkd.w_nckd"] == 2.0
    mine = dataclasses.replace(spec, fixed={"w_nckd": 5.0})
    assert with_pair_defaults(mine).fixed == {"w_nckd": 5.0, "lsdkd.temperature": 2.0}
    search = StudySpec(name="s", teacher="wrn_40_2", student="wrn_16_2", methods=("dkd",))
    assert pair_defaults(search) == {} and with_pair_defaults(search) is search
    assert pair_defaults(dataclasses.replace(spec, teacher="cnn", student="mlp")) == {}
