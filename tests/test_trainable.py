from __future__ import annotations

import json

import pytest
import torch

from kdtune.config import ConfigError, Recipe
from kdtune.teacher import get_teacher
from kdtune.trainable import TrialContext, run_trial


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("teachers")
    return get_teacher(digits, "cnn", Recipe(epochs=3), seed=0, cache_dir=cache, log=lambda _: None)


def test_teacher_is_cached_under_its_recipe(digits, teacher):
    def teacher_for(epochs: int):
        cache = teacher.path.rsplit("/", 1)[0]
        return get_teacher(digits, "cnn", Recipe(epochs=epochs), seed=0, cache_dir=cache,
                           log=lambda _: None)  # fmt: skip

    assert not teacher.cached and 0.5 < teacher.metrics["teacher_test_acc"] <= 1.0
    again = teacher_for(3)
    assert again.cached and again.path == teacher.path
    assert all(torch.equal(again.state_dict[k], v) for k, v in teacher.state_dict.items())
    assert teacher_for(1).path != teacher.path


def test_corrupt_teacher_checkpoint_is_named(digits, teacher, tmp_path):
    bad = tmp_path / teacher.path.rsplit("/", 1)[1]
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt.*delete it"):
        get_teacher(digits, "cnn", Recipe(epochs=3), seed=0, cache_dir=tmp_path, log=lambda _: None)


def test_teacher_checkpoint_of_another_architecture_is_named(digits, teacher, tmp_path):
    from kdtune.models import build_model

    wrong = tmp_path / teacher.path.rsplit("/", 1)[1]
    torch.save({"state_dict": build_model("mlp", 10, digits.in_shape).state_dict(), "metrics": {},
                "reliability": {}}, wrong)  # fmt: skip
    with pytest.raises(ConfigError, match="is not a 'cnn' for 10 classes"):
        get_teacher(digits, "cnn", Recipe(epochs=3), seed=0, cache_dir=tmp_path, log=lambda _: None)


def test_one_trial_in_process_reports_every_epoch(digits, teacher):
    reports = []
    context = TrialContext(data=digits, teacher=teacher, student_model="mlp", device="cpu")
    config = {"method": "mixup_kd", "temperature": 4.0, "alpha": 0.4, "epochs": 2, "seed": 0}
    run_trial(config, context, lambda metrics, state: reports.append((metrics, state)))
    assert [m["epoch"] for m, _ in reports] == [1, 2]
    final, state = reports[-1]
    for key in (
        "val_acc",
        "val_ece",
        "test_acc",
        "test_ece",
        "test_ece_ts",
        "temperature_ts",
        "test_agreement",
    ):
        assert key in final and final[key] == final[key]  # present and not NaN
    assert final["val_acc"] > 0.3  # 2 epochs of an MLP on digits is far above chance (0.1)
    assert sum(json.loads(final["test_reliability"])["count"]) == len(digits.test)
    assert state["epoch"] == 2 and "model" in state


def test_trial_resumes_from_its_checkpoint_with_identical_results(digits, teacher):
    context = TrialContext(data=digits, teacher=teacher, student_model="mlp", device="cpu")
    config = {"method": "kd", "epochs": 3, "seed": 1}
    straight, first_leg, resumed = [], [], []
    run_trial(config, context, lambda m, s: straight.append(m))
    run_trial(config, context, lambda m, s: first_leg.append((m, s)))
    state_after_1 = first_leg[0][1]
    run_trial(config, context, lambda m, s: resumed.append(m), resume=state_after_1)
    assert [m["epoch"] for m in resumed] == [2, 3]
    assert resumed[-1]["val_acc"] == pytest.approx(straight[-1]["val_acc"])
    assert resumed[-1]["val_nll"] == pytest.approx(straight[-1]["val_nll"], rel=1e-5)


def test_t_stddev_of_every_augmentation_from_the_teacher_alone(digits, teacher):
    from kdtune.augment import AUGMENTATIONS
    from kdtune.teacher import teacher_t_stddev

    model = teacher.build(digits.num_classes, digits.in_shape, torch.device("cpu"))
    values = {name: teacher_t_stddev(model, digits, name, epochs=2) for name in AUGMENTATIONS}
    assert all(0 < v < 0.5 for v in values.values()), values
    assert teacher_t_stddev(model, digits, "cutmix", epochs=2) == pytest.approx(values["cutmix"])
    with pytest.raises(ConfigError, match="augmentation"):
        teacher_t_stddev(model, digits, "nope")


def test_final_report_has_diagnostics(digits, teacher):
    reports = []
    context = TrialContext(data=digits, teacher=teacher, student_model="mlp", device="cpu")
    run_trial({"method": "kd", "epochs": 1}, context, lambda m, s: reports.append(m))
    final = reports[-1]
    for split in ("val", "test"):
        for name in ("acc", "nll", "ece", "adaptive_ece", "brier", "conf_gap", "oe"):
            assert f"{split}_{name}" in final and f"{split}_{name}_ts" in final
    assert final["train_linearity_gain"] == pytest.approx(
        final["train_linearity_teacher"] - final["train_linearity_student"]
    )
    assert final["train_linearity_student"] >= 0 and final["test_kl_teacher_student"] >= 0
