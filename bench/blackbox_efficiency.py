"""`python -m bench.search_efficiency --blackbox`: what MO-ASHA saves, measured on the
learning-curve blackbox over many seeds, against the true value of what each search reports.

Three searches of the default study per seed (the study's seed: its sampler's and the measured
seed its trials replay), each replayed by `bench.simulated_search` at the study's concurrency:
FIFO (24 trials, every one its full budget), MO-ASHA (the default study: 72 trials) and random
search (24 full trials, Optuna's RandomSampler). After every trial that ran its whole budget,
x = the trial-epochs the search has spent (stopped trials' included), y = the *true*
hypervolume of the front the search reports: the configurations on its front, valued at their
seed means (the surrogate's), not at the one noisy training the search saw. The reference point
is the study's.

Headline, per seed: the trial-epochs MO-ASHA needs to reach FIFO's final true hypervolume, as a
fraction of FIFO's whole budget (inf where it never does); the median and interquartile range
over seeds (goal: median <= 0.5x). Each search's optimism: the hypervolume of its front as
reported minus its true one (a search that picks its front from noisy values is flattered by
the noise it picked).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import optuna
import torch

from bench.common import figure_path, finite_or_none, table, write_result
from bench.simulated_search import SearchTrace, simulate_search
from kdtune.blackbox import DEFAULT_PATH, Blackbox
from kdtune.config import StudySpec
from kdtune.search import quiet_optuna

SEARCHES = ("fifo", "moasha", "random")
LABELS = {"fifo": "FIFO (TPE, 24 full trials)", "moasha": "MO-ASHA (TPE, the default's 72)",
          "random": "random search (24 full trials)"}  # fmt: skip
COLOURS = {"fifo": "tab:gray", "moasha": "tab:blue", "random": "tab:orange"}


def search_specs(spec: StudySpec, seed: int, fifo_trials: int,
                 moasha_trials: int) -> dict[str, StudySpec]:  # fmt: skip
    # plain searches, one seed per configuration (bench.front_seeds measures the replicates)
    fifo = dataclasses.replace(spec, seed=seed, scheduler="fifo", num_samples=fifo_trials,
                               front_seeds=1)  # fmt: skip
    return {"fifo": fifo, "random": fifo,
            "moasha": dataclasses.replace(spec, seed=seed, scheduler="moasha", front_seeds=1,
                                          num_samples=moasha_trials)}  # fmt: skip


def random_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=spec.seed)


def reach(trace: SearchTrace, target: float, budget: int) -> float:
    """The trial-epochs (a fraction of `budget`) after which `trace`'s true hypervolume is
    at least `target`; inf if never."""
    _, true = trace.hypervolumes()
    reached = np.flatnonzero(true >= target - 1e-12)
    return float(trace.full_ended_at[reached[0]] / budget) if len(reached) else float("inf")


def true_at(trace: SearchTrace, x: np.ndarray) -> np.ndarray:
    """The true hypervolume after x trial-epochs (a step function, 0 before the first full
    trial)."""
    _, true = trace.hypervolumes()
    where = np.searchsorted(trace.full_ended_at, x, side="right") - 1
    return np.where(where >= 0, true[np.maximum(where, 0)] if len(true) else 0.0, 0.0)


def quartiles(values: Sequence[float]) -> list[float | None]:
    """25th, 50th, 75th percentiles (inf, "never", sorts last); None where it is inf."""
    found = np.percentile(np.array(values, dtype=float), [25, 50, 75], method="lower")
    return [float(v) if np.isfinite(v) else None for v in found]


def _shown(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "never"


def plot(traces: dict[str, list[SearchTrace]], budget: int, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 4.5))
    end = max(t.total_epochs for runs in traces.values() for t in runs)
    xs = np.linspace(0, end, 400)
    top = 0.0
    for name, runs in traces.items():
        values = np.array([true_at(t, xs) for t in runs])
        low, median, high = np.percentile(values, [25, 50, 75], axis=0)
        top = max(top, float(median.max()))
        axis.fill_between(xs, low, high, step="post", color=COLOURS[name], alpha=0.15, lw=0)
        axis.step(xs, median, where="post", color=COLOURS[name], lw=2,
                  label=f"{LABELS[name]}: median, quartiles")  # fmt: skip
    axis.axvline(budget, color="tab:gray", ls=":", lw=1)
    axis.set_ylim(bottom=0.75 * top)  # the first trials' climb hides where the searches differ
    axis.set_xlabel("trial-epochs spent")
    axis.set_ylabel("true hypervolume of the reported front")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(args: argparse.Namespace, spec: StudySpec) -> dict:
    quiet_optuna(False)
    path = Path(args.blackbox) if args.blackbox is not True else DEFAULT_PATH
    box = Blackbox.load(path)
    if args.quick:
        args.seeds = 2
    began = time.perf_counter()
    traces: dict[str, list[SearchTrace]] = {name: [] for name in SEARCHES}
    for seed in range(args.seeds):
        specs = search_specs(spec, seed, args.trials, args.moasha_trials)
        for name in SEARCHES:
            sampler = random_sampler if name == "random" else None
            traces[name].append(simulate_search(specs[name], box, sampler=sampler))
        print(f"seed {seed}: " + ", ".join(
            f"{name} {traces[name][-1].total_epochs} trial-epochs, true HV "
            f"{traces[name][-1].final[1]:.5f}" for name in SEARCHES), flush=True)  # fmt: skip
    wall = time.perf_counter() - began
    fifo = traces["fifo"]
    per_seed = {name: [reach(t, f.final[1], f.total_epochs) for t, f in zip(runs, fifo)]
                for name, runs in traces.items() if name != "fifo"}  # fmt: skip
    budget = int(np.median([f.total_epochs for f in fifo]))
    optimism = {name: float(np.mean([t.final[0] - t.final[1] for t in runs]))
                for name, runs in traces.items()}  # fmt: skip
    at_budget = {name: float(np.mean([true_at(t, np.array([budget]))[0] for t in runs]))
                 for name, runs in traces.items()}  # fmt: skip
    rows = [("search", "trial-epochs", "full trials", "true HV (final)", "reported HV",
             "optimism", f"true HV at {budget}", "to FIFO's final true HV (q1 / median / q3)")]
    for name, runs in traces.items():
        spread = quartiles(per_seed[name]) if name in per_seed else None
        rows.append((LABELS[name], f"{np.mean([t.total_epochs for t in runs]):.0f}",
                     f"{np.mean([t.full.sum() for t in runs]):.1f}",
                     f"{np.mean([t.final[1] for t in runs]):.5f}",
                     f"{np.mean([t.final[0] for t in runs]):.5f}", f"{optimism[name]:+.5f}",
                     f"{at_budget[name]:.5f}",
                     " / ".join(map(_shown, spread)) if spread else "1.00x by definition"))
    print(table(rows))
    q1, ratio, q3 = quartiles(per_seed["moasha"])
    reached = sum(np.isfinite(per_seed["moasha"]))
    print(f"{args.seeds} seeds in {wall:.0f} s on {path.name}; MO-ASHA reached FIFO's final "
          f"true hypervolume on {reached} of {args.seeds} seeds")  # fmt: skip
    print(f"MO-ASHA trial-epochs to FIFO's final true hypervolume / FIFO's (median over seeds) "
          f"= {_shown(ratio)}")  # fmt: skip
    name = "search_efficiency_blackbox"
    figure = plot(traces, budget, figure_path(name, torch.device("cpu"), args.quick),
                  f"{spec.name} on the {path.name} blackbox, {args.seeds} seeds:\nMO-ASHA reaches "
                  f"FIFO's final true hypervolume with {_shown(ratio)} of its trial-epochs "
                  "(median)")  # fmt: skip
    record = write_result(name, torch.device("cpu"), {
        "blackbox": path.name, "seeds": args.seeds, "fifo_trials": args.trials,
        "moasha_trials": args.moasha_trials, "concurrency": spec.max_concurrent_trials,
        "reference_point": list(spec.reference_point), "fifo_budget": budget,
        "ratio": ratio, "ratio_quartiles": [q1, ratio, q3], "reached": int(reached),
        "per_seed": {name: [finite_or_none(v) for v in values]
                     for name, values in per_seed.items()},
        "optimism": optimism, "true_at_fifo_budget": at_budget,
        "final": {name: {"reported": [t.final[0] for t in runs], "true": [t.final[1] for t in runs]}
                  for name, runs in traces.items()},
        "wall_s": wall, "figure": figure.name}, quick=args.quick)  # fmt: skip
    print(f"wrote {record} and {figure}")
    return {"ratio": ratio, "per_seed": per_seed, "optimism": optimism}
