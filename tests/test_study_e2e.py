"""The smoke study end to end: real Ray Tune trials, real Optuna, a real sqlite MLflow store."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from kdtune.pareto import pareto_front


@pytest.fixture(scope="module")
def smoke_study(ray_local, tmp_path_factory):
    import studies.temperature_sweep as study
    from kdtune.study import run_study

    folder = tmp_path_factory.mktemp("study")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    spec = dataclasses.replace(study.SMOKE, num_samples=3, scheduler="fifo",
                               storage_path=str(folder / "ray_results"))
    result = run_study(spec, tracking_uri=uri, log=lambda _: None)
    return spec, result, MlflowClient(uri)


def test_mlflow_holds_parent_and_one_child_per_trial(smoke_study):
    spec, result, client = smoke_study
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["dataset"] == "digits"
    assert parent.data.metrics["num_finished"] == result.table.num_rows
    assert "teacher_test_acc" in parent.data.metrics
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}' and "
                      "tags.`kdtune.trial_id` LIKE '%'",
    )  # fmt: skip
    # the searched trials, then the replicates of the front's configurations with new seeds
    seeds = result.table.column("seed").to_pylist()
    assert seeds.count(spec.seed) == spec.num_samples
    assert spec.num_samples < len(children) == result.table.num_rows <= spec.most_trials
    for child in children:
        assert child.info.status == "FINISHED"
        for metric in ("val_acc", "val_ece"):
            history = client.get_metric_history(child.info.run_id, metric)
            assert [m.step for m in history] == list(range(1, spec.recipe.epochs + 1))
        artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
        assert "reliability_test.png" in artifacts
    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {
        "pareto.png",
        "pareto.parquet",
        "results.parquet",
        "reliability_teacher.png",
    } <= parent_artifacts
    # the trade-off against the hyperparameter of role KD_TEMPERATURE, where a method tried 3
    per_method = {}
    for row in result.table.to_pylist():
        per_method.setdefault(row["method"], set()).add(row["temperature"])
    tradeoff = max(len(t) for t in per_method.values()) >= 3
    assert ("temperature_tradeoff.png" in parent_artifacts) == tradeoff


SEARCHED = ("method", "temperature", "w_ce", "w_kd", "alpha")


def test_the_front_is_that_of_the_seed_means_and_mlflow_groups_each_configuration(smoke_study):
    """The configurations grouped here by their searched values (not by kdtune's key): their
    seed means make the front; pareto.parquet holds them with their errors and seed counts; the
    trials' runs carry their configuration's key and pareto tag; a summary run per configuration
    measured over several seeds holds its means, read back through MLflow."""
    spec, result, client = smoke_study
    table = pq.read_table(result.study_dir / "results.parquet").to_pylist()
    names = [m for m, _ in spec.objectives]
    groups: dict[tuple, list[dict]] = {}
    for row in table:
        groups.setdefault(tuple(row.get(k) for k in SEARCHED), []).append(row)
    assert any(len(rows) > 1 for rows in groups.values()), "no configuration was replicated"
    means = np.array([[np.mean([r[m] for r in rows]) for m in names] for rows in groups.values()])
    expected = pareto_front(means, [mode for _, mode in spec.objectives])
    for flag, rows in zip(expected, groups.values()):
        assert sorted(r["seed"] for r in rows) == list(range(len(rows)))  # seeds 0, 1, 2 ...
        assert len({r["config_key"] for r in rows}) == 1
        for row in rows:
            assert row["pareto"] == flag and row["seeds"] == len(rows)
            tags = client.get_run(row["mlflow_run_id"]).data.tags
            assert tags["pareto"] == ("true" if flag else "false")
            assert tags["kdtune.config_key"] == row["config_key"]
    front = pq.read_table(result.study_dir / "pareto.parquet").to_pylist()
    assert len(front) == expected.sum() >= 1
    on_front = {key: rows for (key, rows), flag in zip(groups.items(), expected) if flag}
    for member in front:
        rows = on_front[tuple(member.get(k) for k in SEARCHED)]
        assert member["seeds"] == len(rows) and 0 <= member["p_nondominated"] <= 1
        for m in names:
            assert member[m] == pytest.approx(np.mean([r[m] for r in rows]))
            assert (member.get(f"{m}_se") is None) == (len(rows) == 1 and
                                                       all(len(g) == 1 for g in groups.values()))
    parent = client.get_run(result.parent_run_id)
    summaries = client.search_runs(
        [parent.info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{result.parent_run_id}' and "
        "tags.`kdtune.configuration_summary` = 'true'")  # fmt: skip
    by_key = {r["config_key"]: rows for rows in groups.values() for r in rows}
    wanted = {r[0]["config_key"] for r in groups.values() if len(r) > 1}
    assert {s.data.tags["kdtune.config_key"] for s in summaries} == wanted
    for summary in summaries:
        rows = by_key[summary.data.tags["kdtune.config_key"]]
        assert summary.data.metrics["seeds"] == len(rows)
        mean = np.mean([r["val_acc"] for r in rows])
        assert summary.data.metrics["val_acc"] == pytest.approx(mean)
        assert summary.data.tags["pareto"] == ("true" if rows[0]["pareto"] else "false")
        assert summary.info.run_name.endswith(f" ({len(rows)} seeds)")
        assert "seed=" not in summary.info.run_name  # the configuration's, not a seed's
    volume = parent.data.metrics  # on the seed means, inside its bootstrap interval
    assert volume["hypervolume_low"] <= volume["hypervolume"] <= volume["hypervolume_high"]


def test_batched_reports_still_log_every_epoch_to_mlflow(ray_local, tmp_path):
    """With a report interval longer than the trial, Tune hears from it once (the last epoch,
    which checkpoints) and MLflow still gets every epoch at its own step."""
    import json

    import studies.temperature_sweep as study
    from kdtune.config import Recipe
    from kdtune.study import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = dataclasses.replace(study.SMOKE, methods=("kd",), num_samples=1, recipe=Recipe(epochs=6),
                               scheduler="fifo", front_seeds=1,
                               report_interval_s=1e9, checkpoint_interval_s=1e9,
                               storage_path=str(tmp_path / "ray"))  # fmt: skip
    result = run_study(spec, tracking_uri=uri, log=lambda _: None)
    reports = [json.loads(line) for path in (result.study_dir).glob("tune_trainable_*/result.json")
               for line in path.read_text().splitlines()]  # fmt: skip
    assert [r["epoch"] for r in reports] == [6]
    assert [m["epoch"] for m in json.loads(reports[0]["reports"])] == [1, 2, 3, 4, 5, 6]
    # Tune sees the epochs packed, so it keeps no statistics of kdtune's metrics in its state
    assert "val_acc" not in reports[0] and "test_acc" not in reports[0] and reports[0]["node_id"]
    run_id = result.table.column("mlflow_run_id")[0].as_py()
    history = MlflowClient(uri).get_metric_history(run_id, "val_acc")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    assert "reports" not in result.table.column_names
    last = json.loads(reports[0]["reports"])[-1]  # the results table: the last epoch, unpacked
    assert result.table.column("test_acc")[0].as_py() == last["test_acc"]


def test_trials_reuse_worker_processes(smoke_study):
    """reuse_actors: with more trials than run at once, a later trial runs in the process of an
    earlier one (no new Python, torch import or CUDA context per trial)."""
    spec, result, _ = smoke_study
    pids = result.table.column("pid").to_pylist()
    assert spec.num_samples > spec.max_concurrent_trials
    assert len(set(pids)) <= spec.max_concurrent_trials < len(pids)


def test_every_trial_records_its_resolved_typed_hyperparameters(smoke_study):
    """Defaults included: a trial's child run and its Parquet row hold every hyperparameter its
    method declares, typed (ints as ints, switches as booleans), and the recipe it trained with."""
    from kdtune.methods import METHODS

    spec, result, client = smoke_study
    schema = result.table.schema
    for row in result.table.to_pylist():
        params = client.get_run(row["mlflow_run_id"]).data.params
        for hparam in METHODS[row["method"]].hparams:
            value = row[hparam.name]
            assert type(value) is hparam.kind, (hparam.name, value)
            if hparam.kind is bool:
                assert params[hparam.name] == ("true" if value else "false")
            elif hparam.kind is int:
                assert params[hparam.name] == str(value)
            else:
                assert type(value)(params[hparam.name]) == value
        assert params["epochs"] == str(spec.recipe.epochs) and params["optimizer"] == "sgd"
    assert schema.field("epochs").type == "int64" and schema.field("augment").type == "bool"
    assert schema.field("logit_standardize").type == "bool"


def test_the_mlflow_record_reads_at_a_glance(smoke_study):
    """What the UI shows, asserted over MLflow's API: an experiment of model training (it opens
    on its runs), child runs named by their configuration, readable params, kdtune's own metrics
    only, a parent run that describes the study and carries its data and interactive front."""
    import json

    from ray.tune.result import AUTO_RESULT_KEYS

    spec, result, client = smoke_study
    parent = client.get_run(result.parent_run_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert parent.data.params["methods"] == "kd, mixup_kd"
    assert parent.data.params["objectives"] == "val_acc:max, val_ece:min"
    # where the search's Optuna study is, for optuna-dashboard (not an empty string)
    assert parent.data.params["optuna_storage"] == f"sqlite:///{result.study_dir / 'optuna.db'}"
    # and back: the Optuna study names its MLflow record, and its search finds each trial's run
    import optuna

    searched = optuna.load_study(study_name=spec.name, storage=parent.data.params["optuna_storage"])
    links = searched.user_attrs
    assert (links["mlflow_parent_run_id"], links["mlflow_tracking_uri"]) == (
        result.parent_run_id, result.tracking_uri)
    assert links["mlflow_ui_route"].startswith(f"#/experiments/{parent.info.experiment_id}/runs")
    for trial in searched.trials:
        found = client.search_runs([parent.info.experiment_id], links["mlflow_run_of_a_trial"]
                                   .replace("<tune_trial_id>", trial.user_attrs["tune_trial_id"]))
        assert [r.info.run_id for r in found] == [
            r["mlflow_run_id"] for r in result.table.to_pylist()
            if r["trial_id"] == trial.user_attrs["tune_trial_id"]]
        # each trial names its run, which names it back (optuna-dashboard shows the attributes)
        [run] = found
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert trial.user_attrs["mlflow_run_url"] == (
            f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs/"
            f"{run.info.run_id}?workflowType=machine_learning")
        assert run.data.tags["optuna_trial_number"] == str(trial.number)
        # a trial that ran its budget: its val_acc per epoch as Optuna's learning curve; a
        # pruned one none (TPE cannot read a pruned trial's curve in a multi-objective study)
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_acc")}
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert trial.intermediate_values == pytest.approx(history)
        else:
            assert trial.intermediate_values == {}
    assert any(t.intermediate_values for t in searched.trials)
    # optuna-dashboard's study page: a note linking the MLflow record, and kdtune's learning
    # curves (its own are for single-objective studies), a line per trial with a curve
    shown = searched._storage.get_study_system_attrs(searched._study_id)

    def joined(prefix: str) -> str:
        count = sum(k.startswith(prefix) for k in shown)
        return "".join(shown[f"{prefix}{i}"] for i in range(count))

    note = joined("dashboard:note_str:")
    assert f"[every trial's run](http://127.0.0.1:5000/{links['mlflow_ui_route']})" in note
    curves = json.loads(joined("dashboard:plot_data:kdtune-learning-curves:"))
    drawn = [t for t in searched.trials if t.intermediate_values or any(
        k.startswith("values_at_epoch_") for k in t.user_attrs)]  # fmt: skip
    assert sorted(line["name"] for line in curves["data"]) == sorted(
        f"trial {t.number}" for t in drawn)
    front_trials = {r["trial_id"] for r in result.table.to_pylist() if r["pareto"]}
    for line in curves["data"]:
        [trial] = [t for t in drawn if line["name"] == f"trial {t.number}"]
        assert (line["line"]["color"] == "#d62728") == (
            trial.user_attrs["tune_trial_id"] in front_trials)
    # the replicates are not Optuna's trials, and name none
    replicate_runs = {r["mlflow_run_id"] for r in result.table.to_pylist()} - {
        t.user_attrs["mlflow_run_id"] for t in searched.trials}
    for run_id in replicate_runs:
        assert "optuna_trial_number" not in client.get_run(run_id).data.tags
    assert "data_root" not in parent.data.params  # digits are embedded: no folder to name
    assert "teacher_test_acc" in parent.data.metrics
    assert "teacher_val_nll" not in parent.data.metrics  # the rest is in teacher.json
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("### ") and "Pareto front" in note and "pareto.html" in note
    # what the search printed after its tables, and why optuna-dashboard's importances differ
    assert "#### After the search" in note and "optuna-dashboard's importance panel" in note
    assert "Which hyperparameters mattered" in note or "importance: fewer than" in note
    for row in result.front.to_pylist():
        run = (f"#/experiments/{parent.info.experiment_id}/runs/{row['mlflow_run_id']}"
               "?workflowType=machine_learning")
        assert f"| [`{row['run_name']}`]({run}) | {row['seeds']} | {row['val_acc']:.4f}" in note
    views = {k: json.loads(v) for k, v in experiment.tags.items()
             if k.startswith("mlflow.sharedViewState.")}  # fmt: skip
    assert {v["name"] for v in views.values()} == {
        "kdtune: all trials", "kdtune: Pareto front", "kdtune: configurations over seeds"}
    rows = result.table.to_pylist()
    for view in views.values():
        state = json.loads(view["state"])
        summarised = "configurations" in view["name"]
        assert "metrics.`val_acc`" in state["selectedColumns"]
        assert "params.`temperature`" in state["selectedColumns"]
        assert ("tags.`kdtune.stopped_at_epoch`" in state["selectedColumns"]) != summarised
        assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`val_acc`", False)
        shown = client.search_runs([experiment.experiment_id], state["searchFilter"])
        expected = (len(rows) if "all" in view["name"] else
                    len({r["config_key"] for r in rows if r["seeds"] > 1})
                    if summarised else sum(r["pareto"] for r in rows))  # fmt: skip
        assert len(shown) == expected  # the view's filter finds its runs
        # its charts, first in their own section, plot what the runs logged
        [section] = state["compareRunSections"]
        charts = state["compareRunCharts"]
        assert {c["metricSectionId"] for c in charts} == {section["uuid"]}
        logged = set().union(*(r.data.metrics for r in shown))
        params = set().union(*(r.data.params for r in shown))
        for chart in charts:
            keys = (chart.get("selectedMetricKeys") or chart.get("selectedMetrics")
                    or [chart["xaxis"]["key"], chart["yaxis"]["key"]])
            assert set(keys) <= logged, chart
            assert set(chart.get("selectedParams", [])) <= params, chart
        kinds = [c["type"] for c in charts]
        assert kinds == (["SCATTER", "PARALLEL", "LINE", "LINE"] if "all" in view["name"]
                         else ["SCATTER"] if summarised else ["LINE", "LINE"])
    assert "compareRunsMode=CHART" in note  # the description links the charts
    inputs = parent.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["digits (1078/359/360)"]
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"pareto.html", "teacher.json"} <= artifacts
    html = (result.study_dir / "pareto.html").read_text()
    assert html.count("<circle") >= result.table.num_rows  # a point per trial (and the legend)
    for row in result.table.to_pylist():  # each point's tooltip names its run, a click opens it
        route = (f"#/experiments/{parent.info.experiment_id}/runs/{row['mlflow_run_id']}"
                 "?workflowType=machine_learning")
        assert f'data-route="{route}"' in html
        assert f"<title>{row['run_name']}\ntrial {row['trial_id']}" in html
    for row in result.table.to_pylist():
        child = client.get_run(row["mlflow_run_id"])
        setup = {k: child.data.tags.get(k) for k in ("dataset", "teacher", "student")}
        assert setup == {"dataset": "digits", "teacher": spec.teacher, "student": spec.student}
        # the runs table's Dataset column names the study's data for each trial too
        assert [i.dataset.name for i in child.inputs.dataset_inputs] == ["digits (1078/359/360)"]
        # the front stands out in every chart: the UI draws each run in its runColor
        assert child.data.tags["mlflow.runColor"] == ("#d62728" if row["pareto"] else "#b0b0b0")
        words = child.info.run_name.split()
        assert words[0] == row["method"]
        assert f"T={float(child.data.params['temperature']):.3g}" in words
        assert f"w_kd={float(child.data.params['w_kd']):.3g}" in words
        assert not set(child.data.metrics) & set(AUTO_RESULT_KEYS)
        assert "train_lr" in child.data.metrics and "lr" not in child.data.metrics


def test_tables_put_the_best_trial_first(smoke_study):
    spec, result, _ = smoke_study
    values = [v for v in result.table.column("val_acc").to_pylist() if v is not None]
    assert values == sorted(values, reverse=True)
