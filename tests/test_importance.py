"""Which hyperparameters matter: the evaluators over real Optuna studies with a planted answer."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from kdtune.importance import _between_share, format_importances, study_importances

OBJECTIVES = [("val_acc", "max"), ("val_ece", "min")]


def _planted_search(seed: int, trials: int = 30, methods: tuple[str, ...] = ("kd", "lskd")
                    ) -> optuna.Study:  # fmt: skip
    """Two methods with spaces of their own; kd's accuracy is all temperature, lskd's all w_kd,
    and each method's calibration error is all w_ce; the rest is a little noise."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=seed))
    noise = np.random.default_rng(seed)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        method = trial.suggest_categorical("method", list(methods))
        temperature = trial.suggest_float(f"{method}.temperature", 1.0, 16.0, log=True)
        w_ce = trial.suggest_float(f"{method}.w_ce", 0.0, 1.0)
        w_kd = trial.suggest_float(f"{method}.w_kd", 0.1, 1.0)
        accuracy = (0.95 - 0.03 * (math.log2(temperature) - 2) ** 2 if method == "kd"
                    else 0.85 + 0.1 * w_kd)  # fmt: skip
        return accuracy + noise.normal(0, 0.003), 0.02 + 0.08 * w_ce + noise.normal(0, 0.002)

    study.optimize(objective, n_trials=trials)
    return study


def _first(rows: list[dict], objective: str, method: str) -> str:
    own = [r for r in rows if r["objective"] == objective and r["parameter"].startswith(method)]
    return max(own, key=lambda r: r["importance"])["parameter"]


PLANTED = {("val_acc", "kd"): "kd.temperature", ("val_acc", "lskd"): "lskd.w_kd",
           ("val_ece", "kd"): "kd.w_ce", ("val_ece", "lskd"): "lskd.w_ce"}  # fmt: skip


@pytest.mark.parametrize(("evaluator", "methods"), [
    ("fanova", ("kd", "lskd")),  # the default: it keeps its rank across conditional spaces
    ("ped_anova", ("kd",)),  # bench/importance.py: across methods it misses a third of them
])  # fmt: skip
def test_the_planted_hyperparameter_ranks_first_within_its_method(evaluator, methods):
    cases = [(objective, method) for objective, method in PLANTED if method in methods]
    hits = 0
    for seed in range(5):
        rows = study_importances(_planted_search(seed, methods=methods), OBJECTIVES, evaluator)
        hits += sum(_first(rows, *case) == PLANTED[case] for case in cases)
    assert hits >= 0.8 * 5 * len(cases), f"{evaluator}: {hits} of {5 * len(cases)} first"


def test_rows_are_ranked_within_each_objective_and_carry_their_budget():
    rows = study_importances(_planted_search(0), OBJECTIVES, "ped_anova")
    assert [r["objective"] for r in rows] == sorted(
        (r["objective"] for r in rows), key=["val_acc", "val_ece", "pareto front"].index)
    for objective in ("val_acc", "val_ece", "pareto front"):
        values = [r["importance"] for r in rows if r["objective"] == objective]
        assert values == sorted(values, reverse=True) and math.isclose(sum(values), 1.0)
    assert {r["budget"] for r in rows} == {"the whole budget"} and rows[0]["trials"] == 30
    shown = format_importances(rows)
    assert "val_acc: " in shown and "pareto front: " in shown
    assert "ped_anova over the 30 trials" in shown


def test_the_method_share_is_the_variance_between_methods():
    def trial(method: str, value: float) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(
            params={"method": method}, values=[value],
            distributions={"method": optuna.distributions.CategoricalDistribution(["a", "b"])})

    apart = [trial("a", 1.0), trial("a", 1.0), trial("b", 3.0), trial("b", 3.0)]
    mixed = [trial("a", 1.0), trial("a", 3.0), trial("b", 1.0), trial("b", 3.0)]
    half = [trial("a", 0.0), trial("a", 2.0), trial("b", 2.0), trial("b", 4.0)]  # 4 of 8 between
    value = lambda t: t.values[0]  # noqa: E731
    assert _between_share(apart, value) == 1.0 and _between_share(mixed, value) == 0.0
    assert math.isclose(_between_share(half, value), 0.5)


def test_stopped_trials_are_ranked_at_the_deepest_rung_enough_of_them_reached():
    """Under early stopping few trials finish; their objectives at a rung stand in."""
    study = _planted_search(1, trials=12)
    stopped = optuna.create_study(directions=study.directions)
    for i, finished in enumerate(study.trials):  # two finish, the rest stop at epoch 3
        attrs = {"values_at_epoch_1": finished.values, "values_at_epoch_3": finished.values}
        state = optuna.trial.TrialState.COMPLETE if i < 2 else optuna.trial.TrialState.PRUNED
        stopped.add_trial(optuna.trial.create_trial(
            params=finished.params, distributions=finished.distributions, user_attrs=attrs,
            state=state, values=finished.values if i < 2 else None))  # fmt: skip
    rows = study_importances(stopped, OBJECTIVES, "ped_anova")
    assert rows and {r["budget"] for r in rows} == {"epoch 3"} and rows[0]["trials"] == 12
    too_few = optuna.create_study(directions=study.directions)
    too_few.add_trials(study.trials[:3])
    assert study_importances(too_few, OBJECTIVES, "fanova") == []
