"""What a finished search's Optuna study says: which hyperparameters matter (Optuna's importance
evaluators), and how far early stopping's rungs foresaw the final ranking.

Per objective (and, with several, for reaching the Pareto front at all), the importance of each
hyperparameter the search varied, under the sampler's names: "method", and each method's own
("kd.temperature", "lskd.w_kd"), so methods whose spaces differ are assessed each on its own
trials. Only trials that ran their whole budget count (Optuna's COMPLETE; stopped ones are
PRUNED). The evaluator (PED-ANOVA or fANOVA) is the study's choice; bench/importance.py is the
measurement behind the default.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from kdtune.search import REPLICATED_ATTR, rung_values

MIN_TRIALS = 6  # fewer complete trials say nothing about what matters
WEAK_AGREEMENT = 0.5  # a rung's Spearman correlation with the final ranking below this is weak


# config.IMPORTANCE_EVALUATORS's names -> seed -> the Optuna evaluator
EVALUATOR_FACTORIES: dict[str, Callable[[int], Any]] = {
    "fanova": lambda seed: optuna.importance.FanovaImportanceEvaluator(seed=seed),
    "ped_anova": lambda seed: optuna.importance.PedAnovaImportanceEvaluator(),
}


def _evaluator(name: str, seed: int) -> Any:
    return EVALUATOR_FACTORIES[name](seed)


def _subset(study: Any, trials: Sequence[Any]) -> Any:
    """An in-memory study holding `trials`, for evaluators that need one shared search space."""
    subset = optuna.create_study(directions=study.directions)
    subset.add_trials(trials)
    return subset


def with_seed_means(study: Any, means: Mapping[str, Sequence[float]]) -> Any:
    """`study` with each complete trial valued at its configuration's seed means where it has
    them (`means`: Tune trial id -> the means of its configuration, measured over several
    seeds), in memory; the study itself when none has. A configuration's first seed is what
    Optuna saw, partly luck; its seed means are what the ranking should explain."""
    if not means:
        return study
    trials = []
    for trial in study.get_trials(deepcopy=True):
        found = means.get(trial.user_attrs.get("tune_trial_id", ""))
        if found is not None and trial.state == optuna.trial.TrialState.COMPLETE:
            trial.values = list(found)
        trials.append(trial)
    return _subset(study, trials)


def _between_share(trials: Sequence[Any], target: Any) -> float:
    """The share of the target's variance that lies between methods (one-way ANOVA's eta^2)."""
    values = np.array([target(t) for t in trials], dtype=float)
    methods = [t.params.get("method") for t in trials]
    total = float(((values - values.mean()) ** 2).sum())
    between = sum(len(group) * (group.mean() - values.mean()) ** 2
                  for group in (values[[m == name for m in methods]] for name in set(methods)))
    return float(between / total) if total > 0 else 0.0


def _importances(study: Any, target: Any, evaluator: str, seed: int) -> dict[str, float]:
    """{parameter: importance} for one target. PED-ANOVA assesses the whole study at once,
    conditional parameters included; fANOVA only parameters every trial has, so it assesses
    "method" over all trials and each method's parameters over that method's trials."""
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if evaluator == "ped_anova":
        return optuna.importance.get_param_importances(
            study, evaluator=_evaluator(evaluator, seed), target=target)  # fmt: skip
    # unnormalised, fANOVA's importance is the share of the target's variance a parameter
    # explains; the method's share is the same quantity computed directly (a one-parameter
    # forest would explain all of its own predictions)
    found: dict[str, float] = {}
    methods = {t.params.get("method") for t in complete}
    if len(methods) > 1:
        found["method"] = _between_share(complete, target)
    for method in sorted(methods, key=str):
        own = [t for t in complete if t.params.get("method") == method]
        names = sorted({p for t in own for p in t.params if p != "method"})
        if len(own) >= MIN_TRIALS and names:
            found.update(optuna.importance.get_param_importances(
                _subset(study, own), evaluator=_evaluator(evaluator, seed), params=names,
                target=target, normalize=False))  # fmt: skip
    return found


def format_importances(rows: Sequence[dict[str, Any]], top: int = 5) -> str:
    """The most important hyperparameters of each objective, as the terminal shows them."""
    scale = ("share of the objective's variance each explains, within its method's trials"
             if rows[0]["evaluator"] == "fanova" else "importances of an objective sum to 1")
    lines = [f"\nWhich hyperparameters mattered ({rows[0]['evaluator']} over "
             f"the {rows[0]['trials']} trials judged at {rows[0]['budget']}; {scale}):"]
    for objective in dict.fromkeys(r["objective"] for r in rows):
        ranked = [r for r in rows if r["objective"] == objective][:top]
        shown = ", ".join(f"{r['parameter']} {r['importance']:.2f}" for r in ranked)
        lines.append(f"  {objective}: {shown}")
    return "\n".join(lines)


def load_study(storage_url: str, name: str) -> Any:
    return optuna.load_study(study_name=name, storage=storage_url)


def search_ended(storage_url: str, name: str) -> bool:
    """Whether the search handed out every trial it had, replicates included (its searcher
    marks the Optuna study: `searchers.OptunaSearcher`), so that Tune's end was the search's."""
    return bool(load_study(storage_url, name).user_attrs.get(REPLICATED_ATTR))


def _at_fidelity(study: Any) -> tuple[Any, str] | None:
    """The study to rank hyperparameters on, and at what budget: the trials that ran their
    whole budget if there are enough; else, under early stopping, every trial's objectives at
    the deepest rung epoch that enough trials reached (their "values_at_epoch_R" attributes)."""
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if len(complete) >= MIN_TRIALS:
        return study, "the whole budget"
    judged = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE,
                                                       optuna.trial.TrialState.PRUNED])
    reached = {t.number: rung_values(t) for t in judged}
    for epoch in sorted({e for at in reached.values() for e in at}, reverse=True):
        at = [t for t in judged if epoch in reached[t.number]]
        if len(at) >= MIN_TRIALS:
            trials = [optuna.trial.create_trial(params=t.params, distributions=t.distributions,
                                                values=reached[t.number][epoch])
                      for t in at]  # fmt: skip
            return _subset(study, trials), f"epoch {epoch}"
    return None


def study_importances(study: Any, objectives: Sequence[tuple[str, str]], evaluator: str,
                      seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """Rows {objective, parameter, importance, trials, budget, evaluator}, most important first
    within each objective; "pareto front" rows when there are several objectives (PED-ANOVA
    only: the importance of reaching the front); [] when too few trials say anything."""
    found = _at_fidelity(study)
    if found is None:
        return []
    ranked_study, budget = found
    count = len(ranked_study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]))
    targets: list[tuple[str, Any]] = [
        (metric, (lambda t, i=i, s=(-1.0 if mode == "max" else 1.0): s * t.values[i]))
        for i, (metric, mode) in enumerate(objectives)
    ]  # PED-ANOVA with a target finds what makes it low: maxima are negated
    if evaluator == "ped_anova" and len(objectives) > 1:
        targets.append(("pareto front", None))
    rows = []
    for name, target in targets:
        with warnings.catch_warnings():  # Optuna's: `normalize` is experimental; PED-ANOVA
            warnings.simplefilter("ignore")  # minimises a target (ours are signed to suit)
            found = _importances(ranked_study, target, evaluator, seed)
        ranked = sorted(found.items(), key=lambda item: -item[1])
        rows += [{"objective": name, "parameter": parameter, "importance": float(value),
                  "trials": count, "budget": budget, "evaluator": evaluator}
                 for parameter, value in ranked]  # fmt: skip
    return rows


def rung_agreement(study: Any, objectives: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Rows {epoch, objective, spearman, trials}: for each rung epoch and objective, the Spearman
    rank correlation between the objective at that epoch and at the end, over the trials that
    ran their whole budget ([] with fewer than MIN_TRIALS; 0 where either ranking is all ties).
    Those trials all passed the rungs: their range is restricted, which tends to lower the
    figure, and there are few of them, which makes it noisy; a low one still says the rungs
    decided on weak evidence."""
    from scipy.stats import spearmanr

    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    reached = [(rung_values(t), t.values) for t in complete]
    rows = []
    for epoch in sorted({e for at, _ in reached for e in at}):
        at = [(early[epoch], final) for early, final in reached if epoch in early]
        if len(at) < MIN_TRIALS:
            continue
        for i, (objective, _) in enumerate(objectives):
            early = [values[i] for values, _ in at]
            final = [values[i] for _, values in at]
            spearman = spearmanr(early, final).statistic
            rows.append({"epoch": epoch, "objective": objective, "trials": len(at),
                         "spearman": float(spearman) if np.isfinite(spearman) else 0.0})
    return rows


def format_agreement(rows: Sequence[dict[str, Any]]) -> str:
    """The rungs' agreement as the terminal shows it, with advice when the first rung's is weak."""
    lines = [f"\nHow well the rungs foresaw the final ranking (Spearman correlation over the "
             f"{rows[0]['trials']} trials that ran in full; 1 = the same order):"]
    for epoch in dict.fromkeys(r["epoch"] for r in rows):
        shown = ", ".join(f"{r['objective']} {r['spearman']:+.2f}" for r in rows
                          if r["epoch"] == epoch)  # fmt: skip
        lines.append(f"  epoch {epoch}: {shown}")
    first = [r for r in rows if r["epoch"] == rows[0]["epoch"]]
    weak = [r["objective"] for r in first if r["spearman"] < WEAK_AGREEMENT]
    if weak:
        later = next((r["epoch"] for r in rows if r["epoch"] > first[0]["epoch"]), None)
        advice = f"a later first rung (--grace-period {later})" if later else (
            "a later first rung (--grace-period)")
        lines.append(f"  weak at epoch {first[0]['epoch']} for {', '.join(weak)}: early stopping "
                     f"may have dropped trials that would have reached the front; {advice} or "
                     f"--scheduler fifo trade compute for safety")
    return "\n".join(lines)
