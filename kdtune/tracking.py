"""The only module that talks to MLflow.

One parent run per study (the spec as params, the teacher's metrics and plots, the Pareto table
and figure), one child run per trial (tag `mlflow.parentRunId`), metrics logged with one
`log_batch` call per report. Only the driver logs: workers never need to reach the store.
Tracking URI: `MLFLOW_TRACKING_URI` if set, else MLflow's default (sqlite `mlflow.db` in the
working folder), so `mlflow ui` started there shows the study.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from kdtune import plots

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
TRIAL_TAG = "kdtune.trial_id"
METHOD_TAG = "kdtune.method"
FLUSH_SECONDS = 5.0  # a trial's metrics reach MLflow at most this late (and at its end)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings to dotted keys: {"recipe": {"lr": 0.1}} -> {"recipe.lr": 0.1}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def param_text(value: Any) -> str:
    """A param as MLflow shows it: ints as ints, floats in full, true/false, lists comma-joined."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(param_text(v) for v in value)
    return str(value)


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class StudyTracker:
    def __init__(self, experiment: str, tracking_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.client = MlflowClient(self.tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id if found else self.client.create_experiment(experiment)
        )
        self.parent_run_id: str | None = None
        self._trial_runs: dict[str, str] = {}
        self._pending: dict[str, list[Metric]] = {}  # trial id -> metrics not yet written
        self._flushed: dict[str, float] = {}  # trial id -> monotonic time of its last write

    @classmethod
    def of_run(cls, tracking_uri: str, parent_run_id: str) -> StudyTracker:
        """The tracker of an existing study, to add outputs to its parent run afterwards."""
        client = MlflowClient(tracking_uri)
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        tracker = cls(client.get_experiment(experiment_id).name, tracking_uri)
        tracker.parent_run_id = parent_run_id
        return tracker

    def start_study(
        self,
        name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        resume_run_id: str | None = None,
    ) -> str:
        """Open (or re-open, on resume) the parent run; returns its id."""
        if resume_run_id is not None:
            self.parent_run_id = resume_run_id
            self.client.update_run(resume_run_id, status="RUNNING")
            return resume_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        self.parent_run_id = run.info.run_id
        self._log(self.parent_run_id, params=flatten(params))
        return self.parent_run_id

    def _log(
        self,
        run_id: str,
        *,
        metrics: list[Metric] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """One log_batch call per chunk: MLflow takes at most 1000 metrics and 100 params/tags."""
        metric_list = metrics or []
        param_list = [Param(k, param_text(v)[:MAX_PARAM_LENGTH]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(max(-(-len(metric_list) // 1000), -(-len(param_list) // 100),
                           -(-len(tag_list) // 100), 1)):  # fmt: skip
            self.client.log_batch(run_id, metric_list[i * 1000 : (i + 1) * 1000],
                                  param_list[i * 100 : (i + 1) * 100],
                                  tag_list[i * 100 : (i + 1) * 100])  # fmt: skip

    def log_study_metrics(self, metrics: Mapping[str, float]) -> None:
        assert self.parent_run_id is not None
        now = int(time.time() * 1000)
        values = [Metric(k, v, now, 0) for k, v in scalar_metrics(metrics).items()]
        self._log(self.parent_run_id, metrics=values)

    def trial_run(self, trial_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """The trial's child run, found again after a restart: continued, never duplicated."""
        if trial_id in self._trial_runs:
            return self._trial_runs[trial_id]
        assert self.parent_run_id is not None
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' "
            f"and tags.`{TRIAL_TAG}` = '{trial_id}'",
        )
        if existing:
            run_id = existing[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_tags = {"mlflow.parentRunId": self.parent_run_id, TRIAL_TAG: trial_id, **tags}
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{tags.get(METHOD_TAG, 'trial')}-{trial_id}",
                tags=run_tags,
            )
            run_id = run.info.run_id
            self._log(run_id, params=params)
        self._trial_runs[trial_id] = run_id
        return run_id

    def trial_runs(self) -> dict[str, str]:
        """trial id -> child run id, read back from the store (covers resumed studies)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=50000,
        )
        return {
            run.data.tags[TRIAL_TAG]: run.info.run_id for run in runs if TRIAL_TAG in run.data.tags
        }

    def log_trial(self, trial_id: str, metrics: Mapping[str, Any], step: int) -> None:
        """Buffer a report; write the trial's buffer every FLUSH_SECONDS (one call for many
        epochs keeps the driver, which every report passes through, off the critical path)."""
        now = int(time.time() * 1000)
        buffer = self._pending.setdefault(trial_id, [])
        buffer += [Metric(k, v, now, step) for k, v in scalar_metrics(metrics).items()]
        if time.monotonic() - self._flushed.get(trial_id, 0.0) >= FLUSH_SECONDS:
            self.flush(trial_id)

    def flush(self, trial_id: str) -> None:
        self._flushed[trial_id] = time.monotonic()
        pending = self._pending.pop(trial_id, [])
        if pending:
            self._log(self._trial_runs[trial_id], metrics=pending)

    def end_trial(
        self, trial_id: str, status: str, reliability_json: str | None = None,
        failure: str | None = None,
    ) -> None:  # fmt: skip
        self.flush(trial_id)
        run_id = self._trial_runs[trial_id]
        if failure:
            self.client.set_tag(run_id, "failure", failure)
        if reliability_json:
            self.log_figure(
                run_id,
                "reliability_test.png",
                lambda path: plots.reliability_diagram(
                    json.loads(reliability_json), path=path, title=f"trial {trial_id}, test split"
                ),
            )
        self.client.set_terminated(run_id, status=status)

    def log_figure(self, run_id: str, name: str, draw: Any) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            draw(path)
            self.client.log_artifact(run_id, str(path))

    def log_study_artifacts(self, paths: Iterable[str | Path]) -> None:
        assert self.parent_run_id is not None
        for path in paths:
            self.client.log_artifact(self.parent_run_id, str(path))

    def tag_pareto(self, flags: Mapping[str, bool]) -> None:
        """flags: child run id -> on the Pareto front."""
        for run_id, on_front in flags.items():
            self.client.set_tag(run_id, "pareto", "true" if on_front else "false")

    def end_study(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)
