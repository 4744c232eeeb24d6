"""Which hyperparameters matter: the evaluators over real Optuna studies with a planted answer."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from kdtune.importance import (
    _between_share,
    format_agreement,
    format_importances,
    rung_agreement,
    study_importances,
    with_seed_means,
)

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


def _spearman_by_hand(x: list[float], y: list[float]) -> float:
    """1 - 6 sum d^2 / (n (n^2 - 1)) for values without ties."""
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    d = rank(x) - rank(y)
    n = len(x)
    return 1 - 6 * float((d**2).sum()) / (n * (n * n - 1))


def test_rung_agreement_is_the_rank_correlation_of_rung_and_final_values_over_full_trials():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    final_acc = [0.90, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99]
    at_3_acc = [0.60, 0.50, 0.70, 0.40, 0.65, 0.55, 0.45]  # a shuffled order
    final_ece = [0.05, 0.04, 0.03, 0.06, 0.02, 0.07, 0.01]
    for i, (acc, early, ece) in enumerate(zip(final_acc, at_3_acc, final_ece)):
        study.add_trial(optuna.trial.create_trial(
            params={"x": i / 10}, distributions=distributions, values=[acc, ece],
            user_attrs={"values_at_epoch_3": [early, ece],  # ECE's order already final
                        "values_at_epoch_10": [acc - 0.1, ece + 0.01]}))  # fmt: skip
    for _ in range(3):  # stopped trials have no final values: left out
        study.add_trial(optuna.trial.create_trial(
            params={"x": 0.9}, distributions=distributions, state=optuna.trial.TrialState.PRUNED,
            user_attrs={"values_at_epoch_3": [0.99, 0.001]}))  # fmt: skip
    rows = rung_agreement(study, OBJECTIVES)
    by = {(r["epoch"], r["objective"]): r for r in rows}
    assert set(by) == {(3, "val_acc"), (3, "val_ece"), (10, "val_acc"), (10, "val_ece")}
    assert by[3, "val_acc"]["spearman"] == pytest.approx(_spearman_by_hand(at_3_acc, final_acc))
    assert by[3, "val_acc"]["spearman"] < 0.5
    assert by[3, "val_ece"]["spearman"] == pytest.approx(1.0)
    assert by[10, "val_acc"]["spearman"] == pytest.approx(1.0)
    assert all(r["trials"] == 7 for r in rows)
    text = format_agreement(rows)
    assert "epoch 3: val_acc" in text and "weak at epoch 3 for val_acc:" in text
    assert "(--grace-period 10)" in text and "val_ece," not in text.split("weak")[1]


def test_rung_agreement_needs_enough_full_trials():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(5):
        study.add_trial(optuna.trial.create_trial(
            params={"x": i / 10}, distributions=distributions, values=[i, -i],
            user_attrs={"values_at_epoch_3": [i, -i]}))  # fmt: skip
    assert rung_agreement(study, OBJECTIVES) == []


def test_importance_ranks_a_replicated_configuration_at_its_seed_means():
    """Six complete trials whose first seeds say x matters; two of them were measured over
    several seeds, whose means say it does not: the copy holds the means, the rest as told."""
    study = optuna.create_study(directions=["maximize"])
    for i, value in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr("tune_trial_id", f"t{i}")
        study.tell(trial, value)
    valued = with_seed_means(study, {"t0": [0.55], "t5": [0.15]})
    assert [t.values[0] for t in valued.trials] == [0.55, 0.2, 0.3, 0.4, 0.5, 0.15]
    assert [t.params for t in valued.trials] == [t.params for t in study.trials]
    assert with_seed_means(study, {}) is study
