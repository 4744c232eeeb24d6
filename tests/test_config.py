from __future__ import annotations

import pytest

from kdtune.config import ConfigError, Recipe, StudySpec, TrialConfig
from kdtune.methods import METHODS, declarations


def test_trial_config_round_trip_and_defaults():
    raw = {"method": "kd", "temperature": 8.0, "epochs": 3, "seed": 5}
    trial = TrialConfig.from_dict(raw, declarations())
    assert trial.params == {**METHODS["kd"].defaults, "temperature": 8.0}
    assert (trial.params["w_ce"], trial.params["w_kd"]) == (0.1, 0.9)
    assert trial.recipe.epochs == 3 and trial.seed == 5
    assert TrialConfig.from_dict(trial.to_dict(), declarations()) == trial


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
        TrialConfig.from_dict(raw, declarations())


def test_study_spec_from_dict():
    spec = StudySpec.from_dict(
        {
            "name": "s1",
            "methods": ["kd"],
            "recipe": {"epochs": 2, "precision": "bf16"},
            "search": {"temperature": [1, 4]},
        }
    )
    assert spec.methods == ("kd",) and spec.recipe == Recipe(epochs=2, precision="bf16")
    assert spec.search == {"temperature": (1.0, 4.0)}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"num_sample": 3}, "did you mean 'num_samples'"),
        ({"num_samples": 0}, "num_samples"),
        ({"recipe": {"lr": -1}}, "lr: must be > 0"),
        ({"recipe": {"epoch": 1}}, "did you mean 'epochs'"),
        ({"search": {"temperature": [4, 1]}}, "low <= high"),
        ({"objectives": [["val_acc", "up"]]}, "'max' or 'min'"),
        ({"recipe": {"precision": "fp16"}}, "precision: must be one of"),
        ({"recipe": {"fused_optimizer": True}}, "recipe.fused_optimizer: must be a str"),
    ],
)
def test_bad_specs_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        StudySpec.from_dict(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"methods": ["crld"], "fixed": {"tau_w": 1.5}}, r"fixed.tau_w: must be in \[0, 1\]"),
        ({"methods": ["kd"], "fixed": {"tau_w": 0.5}}, "fixed.tau_w: no method"),
        ({"methods": ["kd", "dkd"], "fixed": {"dkd.w_kd": 0.5}}, "fixed.dkd.w_kd: no method"),
        ({"methods": ["topkd"], "fixed": {"k": 2.5}}, "k: must be a whole number"),
        ({"methods": ["kd"], "fixed": {"topk_scale": 2}}, "topk_scale: is a switch"),
        ({"methods": ["cutmixpick_kd"], "search": {"pick": [0, 1]}}, "set it with `fixed`"),
        ({"methods": ["kd"], "search": {"temperature": [0, 4]}}, "search.temperature: must be > 0"),
        ({"methods": ["mixup"], "search": {"alpha": [0, 2]}}, "log scale; give low > 0"),
    ],
)
def test_fixed_and_search_values_are_checked_against_the_declarations(raw, message):
    from kdtune.study import validate_spec

    with pytest.raises(ConfigError, match=message):
        validate_spec(StudySpec.from_dict(raw))


def test_trial_config_is_typed_by_the_declarations():
    """Whole numbers stay ints, switches become booleans, whatever type they arrived as."""
    raw = {"method": "topkd", "k": 3.0, "temperature": 2, "seed": 4}
    trial = TrialConfig.from_dict(raw, declarations())
    assert type(trial.params["k"]) is int and trial.params["k"] == 3
    assert type(trial.params["temperature"]) is float
    switched = TrialConfig.from_dict({"method": "kd", "logit_standardize": 1}, declarations())
    assert switched.params["logit_standardize"] is True
    assert switched.params["topk_scale"] is False
    with pytest.raises(ConfigError, match="seed: must be a whole number >= 0"):
        TrialConfig.from_dict({"method": "kd", "seed": -1}, declarations())


def test_what_a_resume_may_change_of_its_spec():
    """By hand: what the trials were drawn, trained or judged under is refused, field by field
    in a recipe; what Tune keeps as first launched is named; where files go is free."""
    import dataclasses

    from kdtune.config import Recipe, StudySpec, resume_changes, spec_record

    first = StudySpec(recipe=Recipe(epochs=9), num_samples=10)
    saved = spec_record(first)
    assert resume_changes(saved, first) == ([], {})
    again = dataclasses.replace(first, recipe=Recipe(epochs=20, lr=0.1), grace_period=2,
                                num_samples=20, storage_path="/elsewhere", cpus_per_trial=2)
    refused, kept = resume_changes(saved, again)
    assert refused == ["recipe.epochs: 9 -> 20", "recipe.lr: 0.05 -> 0.1", "grace_period: 0 -> 2"]
    assert kept == {"num_samples": 10}
