"""`python -m bench.front_seeds`: what the front's seed replicates buy, on the learning-curve
blackbox over many seeds, against the true value of what each search reports.

Four searches per seed (the study's seed: its sampler's, and the measured seed its trials
replay), each replayed by `bench.simulated_search` with the study's own searcher and scheduler:
- plain: the default study before replicates, MO-ASHA over 72 trials, one seed each;
- fifo: 24 full trials, one seed each (the compute the default study must stay within);
- replicated: the default study as it is (`studies/temperature_sweep.py`: MO-ASHA over 24
  trials, then the front's configurations up to 3 seeds, raced);
- reseed: a search without replicates over RESEED_TRIALS trials (chosen so that, with its
  seed check, it spends about the replicated search's trial-epochs), then every configuration
  on its front trained with 2 more seeds and the front of those seeds' means reported
  (`--reseed`'s recipe, its trials counted at their full budget).
For each: the trial-epochs spent, the hypervolume of the front it reports (the seed means'
front), the true hypervolume of that front's configurations (the surrogate's seed means), and
the optimism, reported minus true: a front picked on noisy values is flattered by the noise.

Goals (issue #24): the replicated search's optimism at most 1/3 of the plain search's (mean
over seeds); its true hypervolume at least FIFO's and at least the reseeded search's (medians);
its trial-epochs within FIFO's 720. The blackbox holds 3 measured seeds per configuration, so
3 seeds per configuration is as far as it can tell replicates apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

import studies.temperature_sweep as study
from bench.common import table, write_result
from bench.simulated_search import SearchTrace, simulate_search
from kdtune.blackbox import DEFAULT_PATH, Blackbox
from kdtune.config import StudySpec
from kdtune.pareto import hypervolume_2d, pareto_front
from kdtune.search import quiet_optuna
from kdtune.simulate import replayed_reports
from kdtune.study import study_declarations

SEARCHES = ("plain", "fifo", "replicated", "reseed")
LABELS = {"plain": "plain MO-ASHA (72 trials, 1 seed)", "fifo": "FIFO (24 full trials, 1 seed)",
          "replicated": "replicated (the default: 24 + front seeds)",
          "reseed": "32 trials, then --reseed x2"}  # fmt: skip
RESEEDS, RESEED_TRIALS = 2, 32


def search_specs(spec: StudySpec, seed: int) -> dict[str, StudySpec]:
    plain = dataclasses.replace(spec, seed=seed, front_seeds=1)
    return {"plain": dataclasses.replace(plain, num_samples=72),
            "fifo": dataclasses.replace(plain, num_samples=24, scheduler="fifo"),
            "replicated": dataclasses.replace(spec, seed=seed),
            "reseed": dataclasses.replace(plain, num_samples=RESEED_TRIALS)}  # fmt: skip


def reseeded(spec: StudySpec, trace: SearchTrace, blackbox: Blackbox) -> tuple[float, float, int]:
    """The search's front re-run with RESEEDS new seeds (seed + 1, ...: other measured seeds
    than the search's): (reported, true) hypervolume of the front of their means, and the
    trial-epochs the search and the re-runs spent."""
    declarations = study_declarations(spec)
    names = [metric for metric, _ in spec.objectives]
    full = np.flatnonzero(trace.full)
    chosen = full[pareto_front(trace.reported[full], trace.directions)]
    means = np.array([np.mean([[replayed_reports({**trace.configs[i], "seed": spec.seed + k},
                                                 blackbox, declarations)[-1][m] for m in names]
                               for k in range(1, RESEEDS + 1)], axis=0)
                      for i in chosen]).reshape(-1, len(names))  # fmt: skip
    front = pareto_front(means, trace.directions)
    reference = trace.reference
    spent = trace.total_epochs + RESEEDS * len(chosen) * spec.recipe.epochs
    return (hypervolume_2d(means, trace.directions, reference),
            hypervolume_2d(trace.true[chosen][front], trace.directions, reference), spent)


def measure(spec: StudySpec, seed: int, blackbox: Blackbox) -> dict[str, tuple[float, float, int]]:
    """Each search's (reported, true) hypervolume and trial-epochs at this seed."""
    found = {}
    for name, searched in search_specs(spec, seed).items():
        trace = simulate_search(searched, blackbox)
        if name == "reseed":
            found[name] = reseeded(searched, trace, blackbox)
        else:
            found[name] = (*trace.seed_mean_front(), trace.total_epochs)
    return found


def summary(found: Mapping[str, list[tuple[float, float, int]]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, runs in found.items():
        values = np.array(runs, dtype=float)
        optimism = values[:, 0] - values[:, 1]
        out[name] = {"trial_epochs_median": float(np.median(values[:, 2])),
                     "trial_epochs_max": float(values[:, 2].max()),
                     "true_median": float(np.median(values[:, 1])),
                     "reported_median": float(np.median(values[:, 0])),
                     "optimism_mean": float(optimism.mean()),
                     "optimism_median": float(np.median(optimism))}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="2 seeds (CI); its own record")
    args = parser.parse_args(argv)
    quiet_optuna(False)
    box = Blackbox.load(DEFAULT_PATH)
    seeds = 2 if args.quick else args.seeds
    began = time.perf_counter()
    found: dict[str, list[tuple[float, float, int]]] = {name: [] for name in SEARCHES}
    for seed in range(seeds):
        for name, values in measure(study.SPEC, seed, box).items():
            found[name].append(values)
        print(f"seed {seed}: " + ", ".join(f"{name} true {found[name][-1][1]:.5f} at "
                                           f"{found[name][-1][2]} trial-epochs"
                                           for name in SEARCHES), flush=True)  # fmt: skip
    wall = time.perf_counter() - began
    result = summary(found)
    rows = [("search", "trial-epochs (median / most)", "true HV (median)",
             "reported HV (median)", "optimism (mean / median)")]
    for name in SEARCHES:
        r = result[name]
        rows.append((LABELS[name], f"{r['trial_epochs_median']:.0f} / {r['trial_epochs_max']:.0f}",
                     f"{r['true_median']:.5f}", f"{r['reported_median']:.5f}",
                     f"{r['optimism_mean']:+.5f} / {r['optimism_median']:+.5f}"))  # fmt: skip
    print(table(rows))
    ratio = result["replicated"]["optimism_mean"] / result["plain"]["optimism_mean"]
    true = {name: f"{result[name]['true_median']:.5f}" for name in SEARCHES}
    print(f"{seeds} seeds in {wall:.0f} s; the replicated search's true hypervolume "
          f"{true['replicated']} against FIFO's {true['fifo']} and the reseeded search's "
          f"{true['reseed']}")  # fmt: skip
    print(f"optimism, replicated / plain (mean over seeds; goal <= 0.33) = {ratio:.2f}x")
    record = write_result("front_seeds", torch.device("cpu"), {
        "blackbox": DEFAULT_PATH.name, "seeds": seeds, "reference_point":
        list(study.SPEC.reference_point), "ratio": ratio, "searches": result,
        "per_seed": {name: [list(v) for v in runs] for name, runs in found.items()},
        "labels": LABELS, "wall_s": wall}, quick=args.quick)  # fmt: skip
    print(f"wrote {record}")
    return {"ratio": ratio, **result}


if __name__ == "__main__":
    main()
