"""The study's searchers as Ray Tune sees them: Optuna's ask/tell over the study's space, or a
grid's points in order. Apart from `kdtune.search` (spaces, samplers, the Optuna study), which
the Ray-free tools (the blackbox builder, replays, importance) import, because a Tune
`Searcher` subclass needs Ray Tune when the module is imported (about a second)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from ray.tune.search import Searcher

from kdtune.config import StudySpec
from kdtune.hparams import Declarations
from kdtune.replicates import ReplicatePlan
from kdtune.reports import expand, last_report
from kdtune.search import (
    MLFLOW_RUN_ATTR,
    MLFLOW_URL_ATTR,
    REPLICATED_ATTR,
    DefineByRun,
    _rebind_running,
    grid_points,
    how_it_ended,
    keep_curve,
    keep_rung_values,
    make_sampler,
    optuna_study,
    resumed_seed,
    rungs,
    write_curve,
)
from kdtune.storage import trial_links


def make_searcher(spec: StudySpec, declarations: Declarations, storage_url: str = "",
                  resume: bool = False, study_id: str = "") -> Any:  # fmt: skip
    """Optuna's multi-objective sampler over the study's space, its study kept in `storage_url`
    (an RDB: optuna-dashboard reads it, --resume continues it; `optuna_study` says which study
    it may take); a grid study runs its points in order instead."""
    if spec.grid:
        return PointsSearcher(grid_points(spec, declarations))
    study = optuna_study(spec, storage_url, resume, study_id)
    plan = ReplicatePlan(tuple(mode for _, mode in spec.objectives), spec.front_seeds,
                         spec.replicate_trials) if spec.replicate_trials else None  # fmt: skip
    return OptunaSearcher(DefineByRun(spec, declarations), study, rungs(spec), plan,
                          spec.num_samples)  # fmt: skip


class OptunaSearcher(Searcher):
    """Optuna's ask/tell as a Tune Searcher: each Tune trial asks one Optuna trial, whose config
    is `space(trial)`, and tells it how the trial ended: its final objectives; PRUNED for a trial
    the scheduler stopped early (TPE then counts it among the poor trials, and no low-fidelity
    values enter the front); FAIL for a failed or non-finite one, which the sampler ignores.
    Its objectives at the scheduler's rung epochs stay on the Optuna trial (`keep_rung_values`).

    No metric for Tune to look for at a result's top level: kdtune's trainables send their
    metrics packed (reports.REPORTS); the objectives are read from the reports.

    With a `plan`, the Tune trials after the `to_search` searched ones are replicates: a
    configuration that ran its whole budget, again with a new seed (`ReplicatePlan`), which
    Optuna is not told of (its sampler models configurations, and a seed's luck is noise to
    it). While none is open but trials still run, Tune is told to wait (None): their ends may
    open one. When the plan has nothing left, the Optuna study is marked (REPLICATED_ATTR), so
    that the end of the study knows that the search ended, not its driver."""

    def __init__(self, space: DefineByRun, study: Any, rung_epochs: Sequence[int] = (),
                 plan: ReplicatePlan | None = None, to_search: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.objectives = list(study.metric_names)
        self.space, self.study, self.rung_epochs = space, study, list(rung_epochs)
        self.asked: dict[str, Any] = {}  # Tune trial id -> its Optuna trial
        self.epochs: dict[str, int] = {}  # Tune trial id -> its budget in epochs
        self.unclaimed: list[int] = []  # Optuna trials no Tune trial knows (_rebind_running)
        self.plan, self.to_search, self.searched = plan, to_search, 0
        self.configs: dict[str, dict[str, Any]] = {}  # running Tune trial id -> its config
        # running Tune trial id -> its first objective per epoch, for Optuna's learning curves
        self.curves: dict[str, dict[int, float]] = {}
        self.linked: set[str] = set()  # running Tune trial ids whose Optuna trial names its run

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self.configs:  # asked again for a trial it answered
            return self.configs[trial_id]
        if trial_id in self.asked or self.plan is None or self.searched < self.to_search:
            config = self._ask(trial_id)
        elif (config := self.plan.next()) is not None:
            if self.plan.spent:  # Tune asks no further once its num_samples are handed out
                self.study.set_user_attr(REPLICATED_ATTR, True)
        elif self.configs or self.asked:
            return None  # the running trials' ends may open a configuration to replicate
        else:
            self.study.set_user_attr(REPLICATED_ATTR, True)
            return Searcher.FINISHED
        self.configs[trial_id] = config
        self.epochs[trial_id] = int(config.get("epochs", 0))
        return config

    def _ask(self, trial_id: str) -> dict[str, Any]:
        if trial_id not in self.asked:
            self.asked[trial_id] = (optuna.trial.Trial(self.study, self.unclaimed.pop(0))
                                    if self.unclaimed else self.study.ask())  # fmt: skip
            self.asked[trial_id].set_user_attr("tune_trial_id", trial_id)
            if (links := trial_links(self.study.study_name)) is not None:
                links.numbers[trial_id] = self.asked[trial_id].number
            self.searched += 1
        return self.space(self.asked[trial_id])

    def _link(self, trial_id: str, trial: Any) -> None:
        """The Optuna trial names its MLflow run once the callback has made it (`TrialLinks`),
        while the trial runs: Optuna lets no finished trial change."""
        links = trial_links(self.study.study_name)
        run_id = links.runs.get(trial_id) if links is not None else None
        if run_id is not None and trial_id not in self.linked:
            trial.set_user_attr(MLFLOW_RUN_ATTR, run_id)
            trial.set_user_attr(MLFLOW_URL_ATTR, links.run_url(run_id))
            self.linked.add(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.asked:
            self._link(trial_id, self.asked[trial_id])
            reports = expand(result)
            keep_rung_values(self.asked[trial_id], reports, self.objectives, self.rung_epochs)
            keep_curve(self.curves.setdefault(trial_id, {}), reports, self.objectives[0])

    def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
        if result:  # a trial stopped at a rung ends on that rung's report
            self.on_trial_result(trial_id, result)
        trial, config = self.asked.pop(trial_id, None), self.configs.pop(trial_id, None)
        curve = self.curves.pop(trial_id, {})
        if trial is None and config is None:
            return
        state, values = how_it_ended(last_report(result), self.objectives,
                                     self.epochs.pop(trial_id, 0), error)  # fmt: skip
        if state == "COMPLETE" and self.plan is not None and config is not None:
            self.plan.measured(config, values)
        if trial is not None:
            self._link(trial_id, trial)  # if no result came
            self.linked.discard(trial_id)
            if state == "COMPLETE":
                write_curve(trial, curve)
            self.study.tell(trial, values or None, state=optuna.trial.TrialState[state])

    def save(self, checkpoint_path: str) -> None:
        """The state without the Optuna study, whose trials are in its storage: pickled with it
        (and with each asked trial, which holds it) the state grew with every trial and was
        written at every snapshot of Tune's (340 KB at 288 trials)."""
        asked = {tid: trial._trial_id for tid, trial in self.asked.items()}
        with open(checkpoint_path, "wb") as handle:
            pickle.dump({**self.__dict__, "study": None, "asked": asked}, handle)

    def restore(self, checkpoint_path: str) -> None:
        """The state of the first launch, its running trials bound to this launch's study (the
        pickled one names the storage where the study folder was then), its sampler seeded anew
        (`resumed_seed`)."""
        with open(checkpoint_path, "rb") as handle:
            state = pickle.load(handle)
        spec, trials = self.space.spec, len(self.study.get_trials(deepcopy=False))
        state.setdefault("searched", trials)  # saved by a kdtune before the replicates
        state.setdefault("curves", {})  # saved by a kdtune before the learning curves
        state.setdefault("linked", set())
        asked, unclaimed = _rebind_running(state["asked"], self.study)
        self.__dict__.update({"rung_epochs": self.rung_epochs, **state}, asked=asked,
                             unclaimed=unclaimed, study=self.study)  # fmt: skip
        self.study.sampler = make_sampler(spec, resumed_seed(spec.seed, trials))


def tell_optuna_of(searcher: Any, attrs: Mapping[str, str], note: str) -> None:
    """Where a search's record is, as its Optuna study's user attributes and its note (Markdown,
    whose links optuna-dashboard's study page makes clickable); a grid has no Optuna study."""
    if isinstance(searcher, OptunaSearcher):
        from optuna_dashboard import save_note

        for key, value in attrs.items():
            searcher.study.set_user_attr(key, value)
        save_note(searcher.study, note)


class PointsSearcher(Searcher):
    """A Tune searcher that hands out `points` in order, each as a whole trial config. (Tune's
    basic generator wants every key of every point declared in a shared param space, which
    points of different methods, with different keys, cannot share.)"""

    def __init__(self, points: list[dict[str, Any]]) -> None:
        super().__init__()
        self.points, self.next_index = points, 0

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        if self.next_index >= len(self.points):
            return Searcher.FINISHED
        self.next_index += 1
        return dict(self.points[self.next_index - 1])

    def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
        pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as handle:
            json.dump({"points": self.points, "next_index": self.next_index}, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as handle:
            state = json.load(handle)
        self.points, self.next_index = state["points"], state["next_index"]
