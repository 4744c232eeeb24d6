"""MO-ASHA's decisions on scripted results, its state across a resume, and a real study it
stops early: the front holds full-budget trials only, Optuna hears of the stopped ones."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from kdtune.callback import SNAPSHOT_GAP
from kdtune.pareto import best_first, crowding_distance, nondominated_ranks
from kdtune.scheduler import MultiObjectiveAsha, SnapshotOnChange, rung_epochs
from kdtune.storage import RUNGS_FILE, for_this_launch

OBJECTIVES = [("val_acc", "max"), ("val_ece", "min")]


def test_rungs_sit_at_the_grace_period_times_powers_of_the_reduction_factor():
    assert rung_epochs(3, 3, 30) == [3, 9]  # not 27: up to the budget / reduction factor
    assert rung_epochs(30 / 9, 3, 30) == [3, 10] and rung_epochs(240 / 9, 3, 240) == [27, 80]
    assert rung_epochs(1, 2, 8) == [1, 2, 4] and rung_epochs(2 / 4, 2, 2) == [1]
    assert rung_epochs(5, 3, 5) == [] and rung_epochs(1, 3, 2) == []


def test_ranks_and_crowding_by_hand():
    points = np.array([[0.9, 0.1], [0.8, 0.05], [0.85, 0.2], [0.7, 0.3], [np.nan, 0.0]])
    assert nondominated_ranks(points, ["max", "min"]).tolist() == [0, 0, 1, 2, 5]
    # four points of one front: the extremes are infinitely isolated; an inner point's
    # distance is the sum over objectives of its neighbours' gap over the objective's range
    crowding = crowding_distance(np.array([[0.0, 1.0], [0.2, 0.6], [0.5, 0.3], [1.0, 0.0]]))
    assert np.isinf(crowding[[0, 3]]).all()
    assert crowding[1] == pytest.approx((0.5 - 0.0) + (1.0 - 0.3))
    assert crowding[2] == pytest.approx((1.0 - 0.2) + (0.6 - 0.0))
    assert best_first(points, ["max", "min"]).tolist() == [0, 1, 2, 3, 4]


def _report(epoch: int, acc: float, ece: float) -> dict:
    return {"epoch": epoch, "val_acc": acc, "val_ece": ece}


def _judge(scheduler: MultiObjectiveAsha, trial: str, acc: float, ece: float) -> str:
    return scheduler.judge(trial, [_report(1, acc, ece)])


def test_a_dominated_trial_stops_at_its_rung_and_a_non_dominated_one_goes_on():
    asha = MultiObjectiveAsha("scripted", OBJECTIVES, max_epochs=4, grace_period=1,
                              reduction_factor=2)  # fmt: skip
    assert asha.rungs == [1, 2]
    assert _judge(asha, "a", 0.9, 0.1) == "CONTINUE"  # the first at a rung always goes on
    assert _judge(asha, "b", 0.8, 0.2) == "STOP"  # dominated by a; 1 of 2 goes on
    assert _judge(asha, "c", 0.95, 0.3) == "CONTINUE"  # on the front with a; 2 of 3 go on
    # a tie with a (identical objectives): the front holds a, c and d, 2 of 4 go on, and the
    # crowding distance keeps the front's ends (a and c), not the twin that came later
    assert _judge(asha, "d", 0.9, 0.1) == "STOP"
    assert _judge(asha, "e", float("nan"), 0.0) == "STOP"  # a non-finite objective ranks last


def test_reports_batched_past_a_rung_are_judged_at_the_rungs_epoch():
    asha = MultiObjectiveAsha("batched", OBJECTIVES, 10, 2, 2)
    assert asha.judge("a", [_report(epoch, 0.9, 0.1) for epoch in (1, 2, 3)]) == "CONTINUE"
    # b's epoch 2 is worse than a's; its better epoch 3 must not decide rung 2
    reports = [_report(1, 0.5, 0.5), _report(2, 0.5, 0.5), _report(3, 0.99, 0.01)]
    assert asha.judge("b", reports) == "STOP"
    assert asha.recorded[2]["b"] == [0.5, 0.5]


def test_a_trial_stopped_at_a_rung_stays_stopped_when_it_reports_that_rung_again():
    """A trial restarted from its checkpoint after an interruption reports its rung again,
    perhaps with other values: the decision taken before stands."""
    asha = MultiObjectiveAsha("once", OBJECTIVES, max_epochs=4, grace_period=1,
                              reduction_factor=2)  # fmt: skip
    assert _judge(asha, "a", 0.9, 0.1) == "CONTINUE"
    assert _judge(asha, "b", 0.8, 0.2) == "STOP"
    assert _judge(asha, "b", 0.99, 0.01) == "STOP"  # would go on, were it judged anew
    assert asha.recorded[1]["b"] == [0.8, 0.2]


def test_the_rungs_survive_a_resume_through_the_state_file(tmp_path):
    straight = MultiObjectiveAsha("straight", OBJECTIVES, 4, 1, 2)
    for_this_launch(RUNGS_FILE, "resumed", tmp_path / "scheduler_state.json")
    first = MultiObjectiveAsha("resumed", OBJECTIVES, 4, 1, 2)
    for trial, acc, ece in (("a", 0.9, 0.1), ("b", 0.8, 0.2)):
        assert _judge(straight, trial, acc, ece) == _judge(first, trial, acc, ece)
    state = json.loads((tmp_path / "scheduler_state.json").read_text())
    assert state["recorded"]["1"] == {"a": [0.9, 0.1], "b": [0.8, 0.2]}
    again = MultiObjectiveAsha("resumed", OBJECTIVES, 4, 1, 2)  # as Tune restores it: empty
    for trial, acc, ece in (("c", 0.95, 0.3), ("d", 0.9, 0.1)):
        assert _judge(straight, trial, acc, ece) == _judge(again, trial, acc, ece)
    assert again.recorded == straight.recorded


def test_a_real_search_stops_trials_early_and_keeps_the_front_to_full_budgets(ray_local, tmp_path):
    import optuna

    import studies.temperature_sweep as study
    from kdtune.config import Recipe
    from kdtune.study import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = dataclasses.replace(study.SMOKE, name="halving", num_samples=8, reduction_factor=2,
                               max_concurrent_trials=2, recipe=Recipe(epochs=4),
                               storage_path=str(tmp_path / "ray"))  # fmt: skip
    result = run_study(spec, tracking_uri=uri, log=lambda _: None)
    rows = result.table.to_pylist()
    searched = [r for r in rows if r["seed"] == spec.seed]
    stopped = [r for r in searched if r["status"] == "STOPPED"]
    full = [r for r in searched if r["status"] == "TERMINATED"]
    assert stopped and full and len(stopped) + len(full) == 8
    assert all(r["stopped_at"] in (1, 2) and r["epoch"] == r["stopped_at"] for r in stopped)
    assert all(r["epoch"] == 4 and r["test_acc"] is not None for r in full)
    # then the replicates, of configurations that ran their budget, run to theirs: MO-ASHA
    # judges the search's trials only (through Tune's own hook)
    replicates = [r for r in rows if r["seed"] != spec.seed]
    assert 0 < len(replicates) <= spec.replicate_trials
    assert all(r["status"] == "TERMINATED" and r["epoch"] == 4 for r in replicates)
    assert {r["config_key"] for r in replicates} <= {r["config_key"] for r in full}
    assert result.front.num_rows >= 1
    assert set(result.front.column("status").to_pylist()) == {"TERMINATED"}
    client = MlflowClient(uri)
    for row in stopped:
        tags = client.get_run(row["mlflow_run_id"]).data.tags
        assert tags["kdtune.stopped_at_epoch"] == str(row["stopped_at"])
    optuna_study = optuna.load_study(study_name="halving",
                                     storage=f"sqlite:///{result.study_dir / 'optuna.db'}")
    states = [t.state.name for t in optuna_study.trials]
    assert states.count("PRUNED") == len(stopped) and states.count("COMPLETE") == len(full)
    assert len(states) == 8  # Optuna is told of the searched trials alone
    assert optuna_study.metric_names == ["val_acc", "val_ece"]
    assert all("values_at_epoch_1" in t.user_attrs for t in optuna_study.trials)
    assert (result.study_dir / "scheduler_state.json").exists()
    spent = client.get_run(result.parent_run_id).data.metrics["trial_epochs"]
    assert spent == sum(r["epoch"] for r in rows) < len(rows) * 4


def test_a_real_search_logs_how_well_its_rungs_foresaw_the_final_ranking(ray_local, tmp_path):
    """A reduction factor just above 1 lets every trial on, so all six run in full and the
    parent run's rung_spearman_* equal the correlation of their MLflow histories."""
    from scipy.stats import spearmanr

    import studies.temperature_sweep as study
    from kdtune.config import Recipe
    from kdtune.study import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = dataclasses.replace(study.SMOKE, name="agreement", num_samples=6, grace_period=2,
                               reduction_factor=1.01, scheduler="moasha", recipe=Recipe(epochs=4),
                               front_seeds=1, storage_path=str(tmp_path / "ray"))  # fmt: skip
    lines: list[str] = []
    result = run_study(spec, tracking_uri=uri, log=lines.append)
    rows = result.table.to_pylist()
    assert [r["status"] for r in rows] == ["TERMINATED"] * 6
    client = MlflowClient(uri)
    for objective in ("val_acc", "val_ece"):
        logged = {m.step: m.value for m in client.get_metric_history(result.parent_run_id,
                                                                     f"rung_spearman_{objective}")}
        assert set(logged) == {2, 3}
        histories = [{m.step: m.value for m in client.get_metric_history(r["mlflow_run_id"],
                                                                          objective)} for r in rows]
        for epoch in (2, 3):
            expected = spearmanr([h[epoch] for h in histories], [h[4] for h in histories]).statistic
            assert logged[epoch] == pytest.approx(0.0 if np.isnan(expected) else expected, abs=1e-6)
    assert any("How well the rungs foresaw the final ranking" in line for line in lines)
    assert any("the search spent 24 trial-epochs, 100% of the 24" in line for line in lines)


@pytest.mark.parametrize("saved_by", ["now", "kdtune before"])
def test_a_resumed_searcher_skips_trials_told_after_its_last_save(saved_by, tmp_path):
    """A driver that dies after telling Optuna a trial ended, but before Tune saved the searcher,
    leaves that trial ended in optuna.db and running in the saved state: the resumed searcher
    must not tell it again (Optuna refuses), must still end the trials that are running, and
    must hand the ones asked after the save, which no Tune trial knows, to its next trials.
    The saved state holds Optuna trial ids, not the study (which grew it with every trial); a
    state saved by an earlier kdtune, with the study and its trials pickled, still resumes."""
    import pickle

    import optuna

    import studies.temperature_sweep as study
    from kdtune.searchers import make_searcher
    from kdtune.study import study_declarations

    spec = dataclasses.replace(study.SMOKE, name="resumed", num_samples=4)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = make_searcher(spec, study_declarations(spec), url, resume=False)
    for trial_id in ("a", "b", "c"):
        first.suggest(trial_id)
    first.save(str(tmp_path / "searcher.pkl"))
    saved = pickle.loads((tmp_path / "searcher.pkl").read_bytes())
    assert saved["study"] is None and all(type(v) is int for v in saved["asked"].values())
    if saved_by == "kdtune before":
        (tmp_path / "searcher.pkl").write_bytes(pickle.dumps(first.__dict__))
    asked_after_save = first.suggest("d")
    first.on_trial_complete("a", {"epoch": 2, "val_acc": 0.9, "val_ece": 0.05})

    second = make_searcher(spec, study_declarations(spec), url, resume=True)
    second.restore(str(tmp_path / "searcher.pkl"))
    second.on_trial_complete("a", {"epoch": 2, "val_acc": 0.9, "val_ece": 0.05})  # no error
    second.on_trial_complete("b", {"epoch": 2, "val_acc": 0.8, "val_ece": 0.07})
    second.on_trial_complete("c", error=True)
    assert second.suggest("e") == asked_after_save  # d's Optuna trial, under its new Tune id
    states = {t.user_attrs["tune_trial_id"]: t.state.name
              for t in optuna.load_study(study_name="resumed", storage=url).trials}  # fmt: skip
    assert states == {"a": "COMPLETE", "b": "COMPLETE", "c": "FAIL", "e": "RUNNING"}


@pytest.mark.parametrize("sampler", ["tpe", "gp", "nsga2"])
def test_a_resumed_search_draws_configurations_it_has_not_tried(sampler, tmp_path):
    """Tune restores the searcher it pickled when the study began, its sampler as seeded then:
    a search interrupted within its random start-up trials drew the same points again."""
    import studies.temperature_sweep as study
    from kdtune.searchers import make_searcher
    from kdtune.study import study_declarations

    spec = dataclasses.replace(study.SPEC, name="reseeded", sampler=sampler, num_samples=20)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = make_searcher(spec, study_declarations(spec), url)
    configs = [first.suggest(str(number)) for number in range(3)]
    first.save(str(tmp_path / "searcher.pkl"))
    resumed = make_searcher(spec, study_declarations(spec), url, resume=True)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    configs += [resumed.suggest(str(number)) for number in range(3, 6)]
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 6


def test_what_optuna_is_told_of_a_finished_trial():
    from kdtune.search import how_it_ended

    metrics = ["val_acc", "val_ece"]
    full = {"epoch": 30, "val_acc": 0.97, "val_ece": 0.02}
    assert how_it_ended(full, metrics, 30, error=False) == ("COMPLETE", [0.97, 0.02])
    assert how_it_ended({**full, "epoch": 3}, metrics, 30, error=False) == ("PRUNED", [])
    assert how_it_ended({**full, "val_ece": math.nan}, metrics, 30, error=False) == ("FAIL", [])
    assert how_it_ended({"epoch": 2, "val_acc": 0.5}, metrics, 30, error=False) == ("FAIL", [])
    assert how_it_ended(full, metrics, 30, error=True) == ("FAIL", [])


@pytest.mark.parametrize(("epochs", "kept"), [(5, 5), (20, 20), (30, 15), (100, 20)])
def test_optuna_gets_a_trials_learning_curve_at_most_20_epochs_evenly_the_last_always(
        epochs, kept):  # fmt: skip
    """A real multi-objective study (whose Trial.report refuses): the curve is the reports'
    first objective, epochs evenly spaced, the last epoch always; TPE still samples after a
    completed trial with a curve (it would fail on a pruned one's)."""
    from kdtune.search import keep_curve, write_curve

    study = optuna.create_study(directions=["maximize", "minimize"], storage="sqlite:///:memory:",
                                sampler=optuna.samplers.TPESampler(n_startup_trials=1, seed=0))
    curve: dict[int, float] = {}
    keep_curve(curve, [{"epoch": e, "val_acc": e / 100, "val_ece": 0.1} for e in range(1, epochs)],
               "val_acc")  # fmt: skip
    keep_curve(curve, [{"epoch": epochs, "val_acc": math.nan}, {"epoch": epochs, "val_acc": 0.5}],
               "val_acc")  # fmt: skip
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    write_curve(trial, curve)
    study.tell(trial, [0.5, 0.1])
    written = study.trials[0].intermediate_values
    assert len(written) == kept and max(written) == epochs and written[epochs] == 0.5
    assert len(set(np.diff(sorted(written)))) == 1  # evenly spaced
    assert all(written[e] == e / 100 for e in written if e < epochs)
    study.ask().suggest_float("x", 0, 1)


@pytest.mark.parametrize("sampler", ["tpe", "gp", "nsga2"])
def test_the_searcher_survives_the_pickling_tune_and_resume_do(sampler, tmp_path):
    """Tune cloudpickles the searcher, with its Optuna study and sampler, when a study starts and
    at its checkpoints, and kdtune's own save pickles it: with every sampler a copy must come
    back and go on asking (Optuna 5.1's NSGA-II held an unpicklable lock)."""
    import optuna
    from ray import cloudpickle

    import studies.temperature_sweep as study
    from kdtune.searchers import make_searcher
    from kdtune.study import study_declarations

    spec = dataclasses.replace(study.SMOKE, name=f"pickled_{sampler}", sampler=sampler,
                               num_samples=12)  # fmt: skip
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = make_searcher(spec, study_declarations(spec), url)
    for number in range(6):
        searcher.suggest(str(number))
        searcher.on_trial_complete(str(number), {"epoch": 2, "val_acc": 0.5 + number / 20,
                                                 "val_ece": 0.1 - number / 100})  # fmt: skip
    copy = cloudpickle.loads(cloudpickle.dumps(searcher))
    asked_by_copy = copy.suggest("6")
    assert asked_by_copy["method"] in spec.methods  # asks the same stored study
    searcher.save(str(tmp_path / "searcher.pkl"))
    resumed = make_searcher(spec, study_declarations(spec), url, resume=True)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    # the copy's trial is in no saved state, as a dead driver's: the resumed searcher takes it
    assert resumed.suggest("7") == asked_by_copy
    assert resumed.suggest("8")["method"] in spec.methods
    states = [t.state.name for t in optuna.load_study(study_name=spec.name, storage=url).trials]
    assert states == ["COMPLETE"] * 6 + ["RUNNING", "RUNNING"]


def _saved_statuses(experiment: Path) -> dict[str, str]:
    """Trial id -> status, as the experiment state Tune last saved on disk says."""
    saved = sorted(experiment.glob("experiment_state-*.json"))
    if not saved:
        return {}
    trial_data = json.loads(saved[-1].read_text())["trial_data"]
    states = (json.loads(state) for state, _ in trial_data)
    return {state["trial_id"]: state["status"] for state in states}


@pytest.mark.parametrize("gap", [SNAPSHOT_GAP, 1e9])
def test_tune_saves_a_trials_end_before_the_next_trial_starts_unless_the_pacer_holds_it(
    gap, ray_local, tmp_path, monkeypatch
):
    """A real Tune run of trials one after another, each 0.5 s: with the default pacing every
    trial's end is in the experiment state on disk by the time the trial after next starts
    (Tune's own periodic saves are turned off here); with a gap no save can meet, they are
    not."""
    from ray import tune

    import kdtune.callback

    monkeypatch.setattr(kdtune.callback, "SNAPSHOT_GAP", gap)
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1000")  # no periodic save: forced ones only

    def one_quick_epoch(config: dict) -> None:  # defined here: Ray ships it by value
        time.sleep(0.5)
        tune.report({"epoch": 1})

    experiment = tmp_path / "paced"
    seen: list[tuple[list[str], dict[str, str]]] = []  # ended trials, saved statuses

    class AtEachStart(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
            ended = [t.trial_id for t in trials if t.status == "TERMINATED"]
            seen.append((ended, _saved_statuses(experiment)))

    tuner = tune.Tuner(
        one_quick_epoch,
        param_space={"x": tune.grid_search(list(range(5)))},
        tune_config=tune.TuneConfig(scheduler=SnapshotOnChange("outside a launch"),
                                    max_concurrent_trials=1),  # fmt: skip
        run_config=tune.RunConfig(name="paced", storage_path=str(tmp_path), verbose=0,
                                  callbacks=[AtEachStart()]),  # fmt: skip
    )
    assert not tuner.fit().errors
    # the trial that ended in the step this one starts in is saved at that step's end
    later = [(ended[:-1], saved) for ended, saved in seen[2:]]
    caught_up = [all(saved.get(t) == "TERMINATED" for t in ended) for ended, saved in later]
    assert len(later) == 3 and all(ended for ended, _ in later)
    if gap == SNAPSHOT_GAP:
        assert all(caught_up), seen
    else:
        assert not any(caught_up), seen


class _StateAtEachLine(io.StringIO):
    """A stdout that, whenever a trial's line is written, reads the trial's status in the
    experiment state Tune has stored in the study folder (what --resume would read)."""

    def __init__(self, experiment: Path) -> None:
        super().__init__()
        self.experiment, self.seen = experiment, {}

    def write(self, text: str) -> int:
        for found in re.finditer(r"trial \d+/\d+ (\w+) ", text):
            self.seen[found[1]] = _saved_statuses(self.experiment).get(found[1])
        return super().write(text)


def test_a_trials_line_is_printed_once_the_stored_state_holds_its_end(
        ray_local, tmp_path, monkeypatch):  # fmt: skip
    """kdtune's real runner, eight short trials two at a time: when the line of an ended trial
    is written, the experiment state in the study folder already says TERMINATED. Printed at
    the trial's end (before Tune's save and its copy), a driver killed as it printed resumed
    without the trial (seen once in CI's SIGKILL test)."""
    from tests.helpers.paced import paced_trials

    out = _StateAtEachLine(tmp_path / "ray" / "held")
    monkeypatch.setattr(sys, "stdout", out)
    paced_trials(tmp_path, "held", epoch_s=0.2, epochs=1, trials=8)
    assert len(out.seen) == 8, out.getvalue()
    assert set(out.seen.values()) == {"TERMINATED"}, out.seen
