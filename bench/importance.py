"""Which importance evaluator, PED-ANOVA or fANOVA, finds the hyperparameter that matters?

Synthetic searches shaped like a KD study: TPE (the study's sampler) over a method (kd or lskd)
and each method's own temperature and loss weights, two objectives. One hyperparameter per
method and objective is planted to dominate (kd's temperature and lskd's w_kd drive the accuracy;
each method's w_ce drives the calibration error), the others add a little, and noise is added.
For each evaluator: how often the planted hyperparameter ranks first among its method's, over
seeds, at study sizes a KD search has, and how long an evaluation takes. The headline is
PED-ANOVA's hit rate over fANOVA's.

    python -m bench.importance            # 20 seeds x 24 and 48 trials
    python -m bench.importance --quick    # 4 seeds x 24 trials (CI)
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import optuna
import torch

from bench.common import table, write_result
from kdtune.importance import study_importances

PLANTED = {("val_acc", "kd"): "kd.temperature", ("val_acc", "lskd"): "lskd.w_kd",
           ("val_ece", "kd"): "kd.w_ce", ("val_ece", "lskd"): "lskd.w_ce"}  # fmt: skip


def _objective(trial: optuna.Trial, noise: np.random.Generator) -> tuple[float, float]:
    method = trial.suggest_categorical("method", ["kd", "lskd"])
    temperature = trial.suggest_float(f"{method}.temperature", 1.0, 16.0, log=True)
    w_ce = trial.suggest_float(f"{method}.w_ce", 0.0, 1.0)
    w_kd = trial.suggest_float(f"{method}.w_kd", 0.1, 1.0)
    if method == "kd":  # accuracy peaks at T = 4; w_kd matters a little
        accuracy = 0.95 - 0.03 * (math.log2(temperature) - 2) ** 2 + 0.005 * w_kd
    else:  # accuracy rises with w_kd; the temperature matters a little
        accuracy = 0.85 + 0.1 * w_kd - 0.002 * math.log2(temperature)
    ece = 0.02 + 0.08 * w_ce + 0.003 * w_kd
    return accuracy + noise.normal(0, 0.005), ece + noise.normal(0, 0.002)


def _search(trials: int, seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=seed,
                                                                   n_startup_trials=10))
    noise = np.random.default_rng(seed)
    study.optimize(lambda trial: _objective(trial, noise), n_trials=trials)
    return study


def _hits(rows: list[dict], method: str, objective: str) -> bool:
    """Whether the planted hyperparameter ranks first among `method`'s own."""
    own = [r for r in rows if r["objective"] == objective and r["parameter"].startswith(method)]
    return bool(own) and max(own, key=lambda r: r["importance"])["parameter"] == PLANTED[
        (objective, method)]  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 seeds, 24 trials (CI)")
    args = parser.parse_args(argv)
    seeds, sizes = (range(4), (24,)) if args.quick else (range(20), (24, 48))
    objectives = [("val_acc", "max"), ("val_ece", "min")]
    rows, measured = [("evaluator", "trials", "planted ranked first", "seconds per study")], {}
    for trials in sizes:
        studies = [_search(trials, seed) for seed in seeds]
        for evaluator in ("ped_anova", "fanova"):
            began, hits, cases = time.perf_counter(), 0, 0
            for study in studies:
                found = study_importances(study, objectives, evaluator)
                for objective, method in PLANTED:
                    hits += _hits(found, method, objective)
                    cases += 1
            seconds = (time.perf_counter() - began) / len(studies)
            measured[(evaluator, trials)] = hits / cases
            rows.append((evaluator, str(trials), f"{hits}/{cases} = {hits / cases:.2f}",
                         f"{seconds:.2f}"))  # fmt: skip
    print(table(rows))
    ped = np.mean([v for (e, _), v in measured.items() if e == "ped_anova"])
    fanova = np.mean([v for (e, _), v in measured.items() if e == "fanova"])
    ratio = ped / max(fanova, 1e-9)
    print(f"planted hyperparameter ranked first: PED-ANOVA / fANOVA = {ratio:.2f}x")
    path = write_result("importance", torch.device("cpu"), {
        "seeds": len(seeds), "trials": list(sizes), "ratio": ratio,
        "hit_rate": {f"{e}@{n}": v for (e, n), v in measured.items()}},
        quick=args.quick)  # fmt: skip
    print(f"wrote {path}")
    return {"ratio": ratio, "hit_rate": measured}


if __name__ == "__main__":
    main()
