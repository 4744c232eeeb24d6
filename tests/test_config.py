from __future__ import annotations

import pytest

from kdtune.config import ConfigError, Recipe, StudySpec, TrialConfig
from kdtune.methods import method_defaults


def test_trial_config_round_trip_and_defaults():
    raw = {"method": "kd", "temperature": 8.0, "epochs": 3, "seed": 5}
    trial = TrialConfig.from_dict(raw, method_defaults())
    assert trial.params == {**method_defaults()["kd"], "temperature": 8.0}
    assert (trial.params["w_ce"], trial.params["w_kd"]) == (0.1, 0.9)
    assert trial.recipe.epochs == 3 and trial.seed == 5
    assert TrialConfig.from_dict(trial.to_dict(), method_defaults()) == trial


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"method": "kd", "temprature": 2.0}, "did you mean 'temperature'"),
        ({"method": "kd", "temperature": 0.0}, "temperature: must be > 0"),
        ({"method": "mixup_kd", "alpha": -1.0}, "alpha"),
        ({"method": "kd", "w_ce": -0.5}, "w_ce: must be >= 0"),
        ({"method": "nope"}, "choose one of"),
        ({"method": "kd", "optimizer": "adam"}, "optimizer"),
        ({"method": "kd", "epochs": 0}, "epochs"),
    ],
)
def test_bad_trial_configs_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_dict(raw, method_defaults())


def test_study_spec_from_dict():
    spec = StudySpec.from_dict(
        {
            "name": "s1",
            "methods": ["kd"],
            "recipe": {"epochs": 2},
            "search": {"temperature": [1, 4]},
        }
    )
    assert spec.methods == ("kd",) and spec.recipe == Recipe(epochs=2)
    assert spec.search == {"temperature": (1.0, 4.0)}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_sample": 3}, "did you mean 'num_samples'"),
        ({"num_samples": 0}, "num_samples"),
        ({"recipe": {"lr": -1}}, "lr: must be > 0"),
        ({"recipe": {"epoch": 1}}, "did you mean 'epochs'"),
        ({"search": {"temperature": [4, 1]}}, "low <= high"),
        ({"fixed": {"tau_w": 1.5}}, r"\[0, 1\]"),
        ({"objectives": [["val_acc", "up"]]}, "'max' or 'min'"),
    ],
)
def test_bad_specs_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        StudySpec.from_dict(raw)
