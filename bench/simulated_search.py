"""A study's search replayed on the learning-curve blackbox in this process, in simulated time:
the benchmarks' way to measure a search over many seeds in seconds.

The search is the study's own: its Optuna searcher (`searchers.make_searcher`, the sampler and
the define-by-run space of a real study, asked and told as Tune asks and tells it) and its
scheduler (`search.make_scheduler`, MO-ASHA's `judge` on every report). Only Ray Tune's event
loop is replaced, by the simplest one that keeps its order of events: `concurrency` trials run
at once; every epoch of every trial takes one unit of simulated time; at each unit the running
trials report their next epoch in the order they started, the scheduler judges each report, a
stopped or finished trial is told to the searcher, and freed slots take new trials until the
study's `num_samples` and replicates have started (or its searcher has finished). A trial's
reports are those the simulated backend
(`kdtune.simulate.replayed_reports`) sends through Ray, so a configuration replays one measured
seed, drawn by the study's seed.

What it leaves out, stated with every figure made with it: epochs of different methods take
the same simulated time (mixup_kd's take ~1.3x kd's on digits); Tune's own order of events
among trials that report at the same moment is not modelled; and the values are the blackbox's
(`kdtune.blackbox`: measured curves of the nearest measured configuration, its "true" value the
surrogate's seed mean).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from kdtune.blackbox import Blackbox
from kdtune.config import StudySpec, TrialConfig
from kdtune.pareto import hypervolume_2d, pareto_front
from kdtune.replicates import configuration_key
from kdtune.search import how_it_ended, make_scheduler
from kdtune.searchers import make_searcher
from kdtune.simulate import replayed_reports
from kdtune.study import study_declarations

_REPLAYS = itertools.count()


@dataclasses.dataclass(frozen=True)
class SearchTrace:
    """One replayed search: every trial in the order it ended."""

    configs: list[dict[str, Any]]  # as the searcher suggested them
    epochs: np.ndarray  # the epochs each ran
    ended_at: np.ndarray  # trial-epochs spent by the whole search when the trial ended
    full: np.ndarray  # bool: it ran its whole budget (the searcher was told COMPLETE)
    reported: np.ndarray  # trials x objectives: its last report's objectives
    true: np.ndarray  # trials x objectives: the surrogate's seed mean of its configuration
    total_epochs: int
    most_running: int  # the most trials that ran at once
    directions: tuple[str, ...]
    reference: tuple[float, ...]
    study: Any = None  # the searcher's Optuna study

    def hypervolumes(self) -> tuple[np.ndarray, np.ndarray]:
        """After each full-budget trial, in end order: the hypervolume of the front the search
        reports (its full-budget trials' reported values) and that front's true hypervolume
        (the same configurations valued at their seed means)."""
        reported, true = [], []
        for end in np.flatnonzero(self.full) + 1:
            full = self.full[:end]
            points = self.reported[:end][full]
            front = pareto_front(points, self.directions)
            reported.append(hypervolume_2d(points, self.directions, self.reference))
            true.append(hypervolume_2d(self.true[:end][full][front], self.directions,
                                       self.reference))  # fmt: skip
        return np.array(reported), np.array(true)

    def seed_mean_front(self) -> tuple[float, float]:
        """(reported, true) hypervolume of the front a study reports: that of the seed means of
        the configurations that ran their whole budget (their seeds grouped by
        `configuration_key`; one seed each without replicates), and the true hypervolume of the
        same configurations. 0, 0 with no full trial."""
        groups: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
        for config, full, reported, true in zip(self.configs, self.full, self.reported,
                                                self.true):  # fmt: skip
            if full:
                groups.setdefault(configuration_key(config), ([], true))[0].append(reported)
        if not groups:
            return 0.0, 0.0
        means = np.array([np.mean(seeds, axis=0) for seeds, _ in groups.values()])
        truth = np.array([true for _, true in groups.values()])
        front = pareto_front(means, self.directions)
        return (hypervolume_2d(means, self.directions, self.reference),
                hypervolume_2d(truth[front], self.directions, self.reference))

    @property
    def full_ended_at(self) -> np.ndarray:
        return self.ended_at[self.full]

    @property
    def final(self) -> tuple[float, float]:
        """(reported, true) hypervolume of the whole search's front; 0 with no full trial."""
        reported, true = self.hypervolumes()
        return (float(reported[-1]), float(true[-1])) if len(true) else (0.0, 0.0)


def simulate_search(spec: StudySpec, blackbox: Blackbox, concurrency: int | None = None,
                    sampler: Callable[[StudySpec], Any] | None = None) -> SearchTrace:  # fmt: skip
    """`spec`'s search (its searcher, sampler, scheduler, num_samples, seed) replayed on
    `blackbox` with `concurrency` trials at once (default: the spec's max_concurrent_trials);
    `sampler(spec)` replaces the study's Optuna sampler (e.g. random search)."""
    if not spec.reference_point:
        raise ValueError(f"{spec.name}: a replayed search needs the spec's reference_point, so "
                         "that hypervolumes compare across searches")  # fmt: skip
    # a name of its own: MO-ASHA keeps its rungs in the file registered under the study's name
    # (storage.for_this_launch), which a real study of the same name run earlier in this process
    # would have left pointing into its own folder
    spec = dataclasses.replace(spec, name=f"{spec.name}-replayed-{next(_REPLAYS)}")
    declarations = study_declarations(spec)
    searcher = make_searcher(spec, declarations)
    if sampler is not None:
        searcher.study.sampler = sampler(spec)
    scheduler = make_scheduler(spec)
    metrics = [metric for metric, _ in spec.objectives]
    concurrency = concurrency or spec.max_concurrent_trials
    # trial id -> its config, the reports it has still to send, its true final objectives
    running: dict[str, tuple[dict[str, Any], list[dict[str, Any]], list[float]]] = {}
    started, spent, most, searching = 0, 0, 0, True
    ended: list[tuple[dict[str, Any], int, int, bool, list[float], list[float]]] = []
    while searching or running:
        while searching and len(running) < concurrency and started < spec.most_trials:
            trial_id = f"trial_{started:05d}"
            config = searcher.suggest(trial_id)
            searching = config != Searcher.FINISHED
            if not isinstance(config, dict):  # None: wait for a running trial to end
                break
            running[trial_id] = (config, replayed_reports(config, blackbox, declarations),
                                 _true_final(config, blackbox, declarations, metrics))  # fmt: skip
            started += 1
        searching = searching and started < spec.most_trials
        most = max(most, len(running))
        spent += len(running)  # one unit of time: every running trial trains one epoch
        for trial_id in list(running):
            config, reports, truth = running[trial_id]
            report = reports.pop(0)
            searcher.on_trial_result(trial_id, report)
            stopped = (scheduler is not None and scheduler.judges(config)
                       and scheduler.judge(trial_id, [report]) == "STOP")  # fmt: skip
            if stopped or not reports:
                searcher.on_trial_complete(trial_id, report)
                state, _ = how_it_ended(report, metrics, spec.recipe.epochs, error=False)
                ended.append((config, report["epoch"], spent, state == "COMPLETE",
                              [report[m] for m in metrics], truth))  # fmt: skip
                del running[trial_id]
    directions = tuple(mode for _, mode in spec.objectives)
    return SearchTrace(
        configs=[e[0] for e in ended], epochs=np.array([e[1] for e in ended]),
        ended_at=np.array([e[2] for e in ended]), full=np.array([e[3] for e in ended]),
        reported=np.array([e[4] for e in ended], dtype=float).reshape(-1, len(metrics)),
        true=np.array([e[5] for e in ended], dtype=float).reshape(-1, len(metrics)),
        total_epochs=spent, most_running=most, directions=directions,
        reference=tuple(spec.reference_point), study=searcher.study)  # fmt: skip


def _true_final(config: Mapping[str, Any], blackbox: Blackbox,
                declarations: Mapping[str, Any], metrics: list[str]) -> list[float]:  # fmt: skip
    trial = TrialConfig.from_dict(config, declarations)
    curves = blackbox.true_curve(trial.method, trial.params)
    return [float(curves[m][trial.recipe.epochs - 1]) for m in metrics]
