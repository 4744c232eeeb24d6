"""Multi-objective asynchronous successive halving (MO-ASHA, Schmucker et al. 2021) as a Ray
Tune TrialScheduler: early stopping for searches with several objectives, which Tune's ASHA
(one metric) and Optuna's pruners (single-objective) cannot do.

Rungs sit at grace_period * reduction_factor^k epochs, up to budget / reduction_factor: a rung
higher up would stop trials that have spent most of their budget to save little (at 27 of 30
epochs, a tenth of one trial), which is why Hyperband's brackets end there too; the default
grace period, budget / reduction_factor^2, puts the rungs at a ninth and a third of the budget
with the default factor 3 (30 epochs: 3 and 10; 240: 27 and 80). When a trial reaches a
rung, its objective vector there joins the rung's record, and the trial goes on only if it ranks
in the top ceil(n / reduction_factor) of the n trials recorded at that rung. The ranking is
non-dominated sorting; within a front, NSGA-II's crowding distance breaks ties, the most isolated
first (`pareto.best_first`). It is asynchronous, as ASHA: a trial is judged on arrival against the
trials that reached the rung before it, never waiting for the rung to fill, so the first trial
at a rung always goes on.

Why crowding distance rather than an epsilon-net (Schmucker et al. study both): it needs no
epsilon, hence no scale for objectives as different as accuracy and ECE; it is deterministic;
and it keeps the front's extremes (the most accurate and the best-calibrated trial), which are
the trade-off's ends a KD researcher asks about. Its known weakness, a poor spread with many
objectives, does not bite at the two or three objectives of a KD study.

Tune does not keep a scheduler's state across --resume (it restores the scheduler as it was
when the study began), so the scheduler keeps its rungs in a JSON file of the study folder,
written after every decision and read back on its first decision after a resume. The file's
place is looked up by study name in this process (`storage.for_this_launch`), as the tracking
callback's route is: a copied or moved study folder still finds its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from kdtune.atomic import write_text
from kdtune.callback import SnapshotPacer, launch_pacer
from kdtune.config import ConfigError
from kdtune.pareto import best_first
from kdtune.reports import expand
from kdtune.storage import RUNGS_FILE, launch_value

SCHEDULER_STATE = "scheduler_state.json"  # in the study folder


def check_state_file(path: Path) -> None:
    """The rungs' file of a study about to resume, readable (else MO-ASHA would fail at its
    first decision, mid-study): one ConfigError naming it and what to do."""
    try:
        json.loads(path.read_text()) if path.exists() else None
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"storage_path: MO-ASHA's record of its rungs, {path}, is damaged (cut "
                          "short?); move it away and resume again: the trials to come are then "
                          "judged against the rung values recorded from then on") from None


def rung_epochs(grace_period: float, reduction_factor: float, max_epochs: int) -> list[int]:
    """The epochs at which trials are judged: grace_period * reduction_factor^k, rounded (and
    at least 1), for as long as it is <= max_epochs / reduction_factor."""
    rungs, epoch = [], float(grace_period)
    while epoch <= max_epochs / reduction_factor + 1e-9:
        rung = max(1, round(epoch))
        if rung < max_epochs and (not rungs or rung > rungs[-1]):
            rungs.append(rung)
        epoch *= reduction_factor
    return rungs


class SnapshotOnChange(FIFOScheduler):
    """Tune's first-in-first-out scheduling, with the experiment state saved soon after a trial
    is added or ends (`callback.SnapshotPacer`, the launch's): what the study printed and
    recorded is then what --resume finds."""

    def __init__(self, study: str) -> None:
        super().__init__()
        self.study = study

    @property
    def snapshots(self) -> SnapshotPacer:
        pacer = launch_pacer(getattr(self, "study", ""))
        if pacer is not None:
            return pacer
        # outside a launch, or pickled by a kdtune that named no study (resumed): its own
        if "_snapshots" not in self.__dict__:
            self._snapshots = SnapshotPacer()
        return self._snapshots

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        self.snapshots.changed(tune_controller)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_error(tune_controller, trial)
        self.snapshots.changed(tune_controller)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        self.snapshots.changed(tune_controller)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self.snapshots.pace(tune_controller)
        return super().on_trial_result(tune_controller, trial, result)


class MultiObjectiveAsha(SnapshotOnChange):
    def __init__(self, study: str, objectives: Sequence[tuple[str, str]], max_epochs: int,
                 grace_period: float, reduction_factor: float,
                 search_seed: int | None = None) -> None:  # fmt: skip
        super().__init__(study)
        self.search_seed = search_seed
        self.loaded = False  # the state file was read (after a resume: what it held before)
        self.objectives = [metric for metric, _ in objectives]
        self.directions = [mode for _, mode in objectives]
        self.reduction_factor = reduction_factor
        self.rungs = rung_epochs(grace_period, reduction_factor, max_epochs)
        # rung -> trial id -> its objective vector at that rung, in arrival order
        self.recorded: dict[int, dict[str, list[float]]] = {rung: {} for rung in self.rungs}
        self.passed: dict[str, int] = {}  # trial id -> the last rung it went on from

    def set_search_properties(self, metric: Any, mode: Any, **spec: Any) -> bool:
        return True  # the objectives are the study's, given at construction

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self.snapshots.pace(tune_controller)
        if not self.judges(trial.config):
            return TrialScheduler.CONTINUE
        return self.judge(trial.trial_id, expand(result))

    def judges(self, config: Mapping[str, Any]) -> bool:
        """Whether a trial of `config` is judged at the rungs: the search's trials are; the
        replicates of a configuration that ran its whole budget (another seed:
        `searchers.OptunaSearcher`) run theirs, to be compared at it."""
        seed = getattr(self, "search_seed", None)  # None: pickled by a kdtune before replicates
        return seed is None or config.get("seed", seed) == seed

    def judge(self, trial_id: str, reports: Sequence[dict[str, Any]]) -> str:
        """CONTINUE or STOP for a trial's new reports (in epoch order): each rung the trial has
        reached since its last decision is decided on its report at that rung's epoch (or the
        first after it)."""
        self._load()
        judged = sum(len(record) for record in self.recorded.values())
        decision = self._judge(trial_id, reports)
        path = cast(Path | None, launch_value(RUNGS_FILE, self.study))
        if path is not None and sum(len(r) for r in self.recorded.values()) > judged:
            self.save(str(path))  # only when a rung took a decision
        return decision

    def _judge(self, trial_id: str, reports: Sequence[dict[str, Any]]) -> str:
        for report in reports:
            epoch = int(report.get("epoch", 0))
            for rung in self.rungs:
                if rung <= self.passed.get(trial_id, 0) or epoch < rung:
                    continue
                if trial_id in self.recorded[rung]:  # stopped there before an interruption:
                    return TrialScheduler.STOP  # a decision is taken once
                if not self._goes_on(trial_id, rung, report):
                    return TrialScheduler.STOP
                self.passed[trial_id] = rung
        return TrialScheduler.CONTINUE

    def _goes_on(self, trial_id: str, rung: int, report: dict[str, Any]) -> bool:
        record = self.recorded[rung]
        record[trial_id] = [_number(report.get(metric)) for metric in self.objectives]
        ids = list(record)
        order = best_first(np.array([record[i] for i in ids]), self.directions)
        keep = math.ceil(len(ids) / self.reduction_factor)
        return ids.index(trial_id) in set(order[:keep].tolist())

    def debug_string(self) -> str:
        counts = ", ".join(f"{rung}: {len(self.recorded[rung])}" for rung in self.rungs)
        return f"MO-ASHA, trials judged per rung epoch: {counts}"

    def save(self, checkpoint_path: str) -> None:
        """The rungs as JSON (plain data: loading it runs no code)."""
        state = {"rungs": self.rungs, "passed": self.passed,
                 "recorded": {str(rung): record for rung, record in self.recorded.items()}}
        write_text(checkpoint_path, json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        if state["rungs"] != self.rungs:
            raise ValueError(f"{checkpoint_path}: rungs {state['rungs']}, not {self.rungs}")
        self.passed = state["passed"]
        self.recorded = {int(rung): record for rung, record in state["recorded"].items()}

    def _load(self) -> None:
        path = cast(Path | None, launch_value(RUNGS_FILE, self.study))
        if not self.loaded and path is not None and path.exists():
            self.restore(str(path))
        self.loaded = True


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan
