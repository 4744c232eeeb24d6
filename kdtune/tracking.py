"""The only module that talks to MLflow.

One parent run per study (the spec as params, the teacher's metrics and plots, the Pareto table
and figure), one child run per trial (tag `mlflow.parentRunId`), metrics logged with one
`log_batch` call per report. Only the driver logs: workers never need to reach the store.
Tracking URI: `MLFLOW_TRACKING_URI` if set, else MLflow's default (sqlite `mlflow.db` in the
working folder), so `mlflow ui` started there shows the study.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from kdtune import plots
from kdtune.config import ConfigError

# MLflow's database layer logs every failed write with its traceback before raising it; kdtune
# reports each such error itself, in one line (callback.TrackingCallback, cli.guarded).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

# A tracking server that stops answering would stall the driver (through which every trial
# report passes) for minutes per call with MLflow's defaults (7 retries, 120 s timeout): fail
# fast instead; the callback then leaves the store alone a while and the record is completed
# from Tune's at the end or on --resume. The user's own settings win.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
TRIAL_TAG = "kdtune.trial_id"
OPTUNA_TRIAL_TAG = "optuna_trial_number"  # on a trial's run: the Optuna trial that asked it
METHOD_TAG = "kdtune.method"
# on a child run whose trial Tune never saved: the driver died after starting it
ORPHAN_TAG = "kdtune.orphan"
STOPPED_TAG = "kdtune.stopped_at_epoch"  # on a child run the scheduler stopped early
# what groups a configuration's runs over seeds (replicates.configuration_key)
CONFIG_TAG = "kdtune.config_key"
# on a configuration's summary run: its seed means, standard errors and seed count
SUMMARY_TAG = "kdtune.configuration_summary"
# MLflow 3's UI opens an experiment of this kind on its runs (not on the GenAI overview)
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"  # a run's Markdown description in the UI
RUN_COLOR_TAG = "mlflow.runColor"  # the colour MLflow 3's UI gives a run, everywhere
FRONT_COLOR, OFF_FRONT_COLOR = "#d62728", "#b0b0b0"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # an experiment's saved runs-table views (MLflow 3)
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


def is_server(uri: str) -> bool:
    """Whether a tracking URI is an MLflow server (rather than a store kdtune opens itself)."""
    return uri.startswith(("http://", "https://"))


def choose_store(given: str | None, recorded_in: str | None) -> str:
    """A study's tracking URI: the one given (--tracking-uri, else MLFLOW_TRACKING_URI); when
    neither is and the study was recorded before (`recorded_in`, on --resume), that store if it
    is still there, so a study resumed from another working folder stays in one store; else
    MLflow's default (sqlite mlflow.db in the working folder)."""
    if given:
        return given
    if recorded_in and not os.environ.get("MLFLOW_TRACKING_URI"):
        local = recorded_in.removeprefix("sqlite:///").removeprefix("file://")
        if is_server(recorded_in) or Path(local).exists():
            return recorded_in
    return mlflow.get_tracking_uri()


def check_store(tracking_uri: str | None) -> str:
    """The tracking URI the study will use, checked before anything starts: a server that does
    not answer within seconds, an unknown scheme or a file that is not an MLflow store is one
    ConfigError naming the URI and the fix (MLflow itself retries for minutes, then tracebacks)."""
    uri = tracking_uri or mlflow.get_tracking_uri()
    if is_server(uri):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                pass
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise ConfigError(f"tracking_uri: no MLflow server answers at {uri} ({reason}); "
                              "start it (`kdtune ui` serves this folder's store) or give "
                              "another --tracking-uri") from None  # fmt: skip
        return uri
    # under the lock, so as not to read a store another process is creating
    with _store_lock(uri):
        path = sqlite_path(uri)
        if path is not None:
            _check_sqlite_store(path, uri)
        try:
            MlflowClient(uri).search_experiments(max_results=1)
        except Exception as error:  # an unknown scheme, a corrupt file, a foreign database...
            first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            raise ConfigError(f"tracking_uri: cannot use the MLflow store {uri} "
                              f"({type(error).__name__}: {first}); give an MLflow "
                              "sqlite:///FILE.db, an empty folder or an http(s):// "
                              "server") from None  # fmt: skip
    return uri


def check_existing_store(tracking_uri: str) -> str:
    """check_store for a store to serve (`kdtune ui`): MLflow would create a missing one empty,
    without a word, and show nothing."""
    if is_server(tracking_uri):
        raise ConfigError(f"tracking_uri: {tracking_uri} is a server already: open it in a "
                          "browser; kdtune ui serves a store, e.g. sqlite:///FILE.db")
    path = local_store_path(tracking_uri)
    if path is not None and not path.exists():
        raise ConfigError(f"tracking_uri: no MLflow store at {path.absolute()}; give "
                          "--tracking-uri the store of a study (its last printed line names it; "
                          "by default mlflow.db in the folder the study ran from)")  # fmt: skip
    return check_store(tracking_uri)


def local_store_path(uri: str) -> Path | None:
    """The file or folder of a local store (sqlite:///FILE, file:///FOLDER, a plain path);
    None for a server or a database elsewhere."""
    if uri.startswith("sqlite:"):
        return sqlite_path(uri)
    if uri.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path))
    return None if "://" in uri else Path(uri)


def _check_sqlite_store(path: Path, uri: str) -> None:
    """MLflow adds its tables to any SQLite file it is given: refuse a database of something
    else (and a file that is no database) rather than write the record into it."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            tables = {row[0] for row in connection.execute(
                "select name from sqlite_master where type = 'table'")}  # fmt: skip
    except sqlite3.DatabaseError as error:
        raise ConfigError(f"tracking_uri: {uri} is not an SQLite database ({error}); give "
                          "another file, or move this one away") from None  # fmt: skip
    if tables and "experiments" not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise ConfigError(f"tracking_uri: {uri} is a database of something else (tables "
                          f"{shown}), not an MLflow store; give another file") from None


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///FILE` URI (relative to the working folder, or absolute with four
    slashes); None for any other URI and for an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").partition("?")[0]
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Held while a process first opens a sqlite store: MLflow creates and migrates a new or
    older store on first use, and two processes doing it at once collide (`duplicate column
    name`, `Online migration expected to match one row`). A lock file beside the store
    (FILE.lock), released by the OS however the process ends."""
    path = sqlite_path(uri)
    try:
        handle = open(f"{path}.lock", "a") if path is not None else None  # noqa: SIM115
    except OSError:  # no folder there, or not writable: MLflow names the problem itself
        handle = None
    if handle is None:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def pareto_tags(on_front: bool) -> dict[str, str]:
    """A run's `pareto` tag, and the colour the UI draws it in (its charts colour each run as
    the runs table does): the front stands out against the rest in grey."""
    return {"pareto": "true" if on_front else "false",
            RUN_COLOR_TAG: FRONT_COLOR if on_front else OFF_FRONT_COLOR}  # fmt: skip


def study_experiments(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's experiments kdtune made (tagged as model training), the one
    updated last first."""
    found = open_client(uri).search_experiments(
        filter_string=f"tags.`{EXPERIMENT_KIND_TAG}` = '{MODEL_TRAINING}'",
        order_by=["last_update_time DESC"], max_results=1000)  # fmt: skip
    return [(experiment.name, experiment.experiment_id) for experiment in found]


MODEL_TRAINING_UI = "workflowType=machine_learning"  # the UI's mode for a route's query
# saved views of the runs table
TRIALS_VIEW, FRONT_VIEW, CONFIGURATIONS_VIEW = "kdtune-trials", "kdtune-front", "kdtune-configs"


def view_link(experiment_id: str, view: str = TRIALS_VIEW, charts: bool = False) -> str:
    """The UI route of a saved view, in the UI's model-training mode (MLflow 3 opens
    experiments on its GenAI overview unless told; an experiment tag is not enough in 3.17),
    on its table or, with `charts`, on its charts."""
    mode = "&compareRunsMode=CHART" if charts else ""
    return (f"#/experiments/{experiment_id}/runs?viewStateShareKey={view}{mode}"
            f"&{MODEL_TRAINING_UI}")


LOCAL_UI = "http://127.0.0.1:5000"  # where `kdtune ui` serves a local store by default


def ui_address(tracking_uri: str) -> str:
    """Where a store's MLflow UI is: the server itself, or `kdtune ui`'s default for a local
    store."""
    return tracking_uri.rstrip("/") if is_server(tracking_uri) else LOCAL_UI


def run_route(experiment_id: str, run_id: str) -> str:
    """The MLflow UI's route (after the server's address) to one run's page, in the UI's model
    training mode (without, MLflow 3.17 shows a run as a GenAI evaluation run)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?{MODEL_TRAINING_UI}"


def open_client(uri: str) -> MlflowClient:
    """An MlflowClient of `uri`: building one builds the store (MLflow keeps one per URI and
    process), so it is built under the store's lock."""
    with _store_lock(uri):
        return MlflowClient(uri)


class StudyTracker:
    def __init__(self, experiment: str, tracking_uri: str | None = None) -> None:
        self.experiment_name = experiment  # the study's name
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.client = open_client(self.tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
        )
        if found and found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        self.parent_run_id: str | None = None
        # the study's data (log_dataset's input of the parent run), which each trial's run gets
        self._study_data: list[DatasetInput] | None = None
        self._trial_runs: dict[str, str] = {}
        # trial id -> its child run in the store before this tracker made any (a resumed study)
        self._earlier_runs: dict[str, Run] | None = None
        # trial id -> reports not yet written, each a list of metrics at one step
        self._pending: dict[str, list[list[Metric]]] = {}
        self._flushed: dict[str, float] = {}  # trial id -> monotonic time of its last write
        # trial id -> the last step logged: a trial restarted from a checkpoint, or resumed,
        # reports again the epochs after its checkpoint; each step is logged once
        self._logged_through: dict[str, int] = {}

    @classmethod
    def of_run(cls, tracking_uri: str, parent_run_id: str) -> StudyTracker:
        """The tracker of an existing study, to add outputs to its parent run afterwards."""
        store = open_client(tracking_uri)
        experiment_id = store.get_run(parent_run_id).info.experiment_id
        tracker = cls(store.get_experiment(experiment_id).name, tracking_uri)
        tracker.parent_run_id = parent_run_id
        return tracker

    def start_study(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """Open a new parent run; returns its id."""
        run = self.client.create_run(self.experiment_id, run_name=name, tags=dict(tags))
        self.parent_run_id = run.info.run_id
        self._log(self.parent_run_id, params=flatten(params))
        return self.parent_run_id

    def reopen_study(self, run_id: str) -> bool:
        """Re-open the parent run of a resumed study; False if this store does not hold it (the
        study was recorded elsewhere: another store, a copied folder)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        if run.info.experiment_id != self.experiment_id:
            return False
        self.parent_run_id = run_id
        self.client.update_run(run_id, status="RUNNING")
        return True

    def _log(
        self,
        run_id: str,
        *,
        metrics: list[Metric] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """One log_batch call per chunk: MLflow takes at most 1000 metrics and 100 params/tags
        (callers keep a report's metrics in one call: `flush`)."""
        metric_list = metrics or []
        param_list = [Param(k, param_text(v)[:MAX_PARAM_LENGTH]) for k, v in (params or {}).items()]
        tag_list = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        for i in range(max(-(-len(metric_list) // 1000), -(-len(param_list) // 100),
                           -(-len(tag_list) // 100), 1)):  # fmt: skip
            self.client.log_batch(run_id, metric_list[i * 1000 : (i + 1) * 1000],
                                  param_list[i * 100 : (i + 1) * 100],
                                  tag_list[i * 100 : (i + 1) * 100])  # fmt: skip

    def log_study_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        assert self.parent_run_id is not None
        now = int(time.time() * 1000)
        values = [Metric(k, v, now, step) for k, v in scalar_metrics(metrics).items()]
        self._log(self.parent_run_id, metrics=values)

    def trial_run(
        self, trial_id: str, params: Mapping[str, Any], tags: Mapping[str, str], step_key: str,
        name: str = "",
    ) -> str:  # fmt: skip
        """The trial's child run (named `name`), found again after a restart: continued, never
        duplicated. `step_key` names the metric whose history tells which steps are logged."""
        if trial_id in self._trial_runs:
            return self._trial_runs[trial_id]
        assert self.parent_run_id is not None
        if self._earlier_runs is None:  # one search for all, not one per trial started
            self._earlier_runs = self._child_runs()
        existing = self._earlier_runs.pop(trial_id, None)
        if existing:
            run_id = existing.info.run_id
            if existing.info.status != "FINISHED":
                self.client.update_run(run_id, status="RUNNING")
            self._logged_through[trial_id] = max(self.logged_steps(run_id, step_key), default=-1)
        else:
            run_tags = {"mlflow.parentRunId": self.parent_run_id, TRIAL_TAG: trial_id, **tags}
            run = self.client.create_run(self.experiment_id, run_name=name or trial_id,
                                         tags=run_tags)  # fmt: skip
            run_id = run.info.run_id
            self._log(run_id, params=params)
            if self._study_data is None:
                self._study_data = self.client.get_run(self.parent_run_id).inputs.dataset_inputs
            if self._study_data:
                self.client.log_inputs(run_id, self._study_data)
        self._trial_runs[trial_id] = run_id
        return run_id

    def tag_trial(self, trial_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self._trial_runs[trial_id], key, value)

    def mark_orphan(self, run_id: str) -> None:
        """A child run whose trial Tune does not know: tagged, and KILLED if it was running."""
        self.client.set_tag(run_id, ORPHAN_TAG, "true")
        if self.run_status(run_id) == "RUNNING":
            self.client.set_terminated(run_id, status="KILLED")

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def trial_runs(self) -> dict[str, str]:
        """trial id -> child run id, read back from the store (covers resumed studies)."""
        return {trial_id: run.info.run_id for trial_id, run in self._child_runs().items()}

    def _child_runs(self) -> dict[str, Run]:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=50000,
        )
        return {run.data.tags[TRIAL_TAG]: run for run in runs if TRIAL_TAG in run.data.tags}

    def log_trial(self, trial_id: str, metrics: Mapping[str, Any], step: int) -> None:
        """Buffer a report (unless its step is logged already); write the trial's buffer every
        FLUSH_SECONDS (one call for many epochs keeps the driver, which every report passes
        through, off the critical path)."""
        if step <= self._logged_through.get(trial_id, -1):
            return
        self._logged_through[trial_id] = step
        now = int(time.time() * 1000)
        report = [Metric(k, v, now, step) for k, v in scalar_metrics(metrics).items()]
        self._pending.setdefault(trial_id, []).append(report)
        if time.monotonic() - self._flushed.setdefault(trial_id, time.monotonic()) >= FLUSH_SECONDS:
            self.flush(trial_id)

    def flush(self, trial_id: str) -> None:
        """Write the buffered reports, never splitting one across calls: a report is in the
        store whole or not at all, so the history of any one metric tells which steps are."""
        self._flushed[trial_id] = time.monotonic()
        batch: list[Metric] = []
        for report in self._pending.pop(trial_id, []):
            if batch and len(batch) + len(report) > 1000:
                self._log(self._trial_runs[trial_id], metrics=batch)
                batch = []
            batch += report
        if batch:
            self._log(self._trial_runs[trial_id], metrics=batch)

    def flush_all(self) -> None:
        for trial_id in list(self._pending):
            self.flush(trial_id)

    def end_trial(
        self, trial_id: str, status: str, reliability_json: str | None = None,
        failure: str | None = None,
    ) -> None:  # fmt: skip
        self.flush(trial_id)
        run_id = self._trial_runs[trial_id]
        if failure:
            self.client.set_tag(run_id, "failure", failure)
        if reliability_json:
            bins, title = json.loads(reliability_json), self.client.get_run(run_id).info.run_name
            self.log_file(run_id, "reliability_test.png", lambda path: plots.reliability_diagram(
                bins, path=path, title=f"{title}, test split"))  # fmt: skip
        self.client.set_terminated(run_id, status=status)

    def log_file(self, run_id: str, name: str, write: Callable[[Path], Any]) -> None:
        """An artifact made on the spot: `write(path)` writes it (a figure, a JSON file)."""
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / name
            write(path)
            self.client.log_artifact(run_id, str(path))

    def log_study_artifacts(self, paths: Iterable[str | Path]) -> None:
        assert self.parent_run_id is not None
        for path in paths:
            self.client.log_artifact(self.parent_run_id, str(path))

    def save_view(self, view_id: str, name: str, search_filter: str, columns: list[str],
                  order_by: tuple[str, bool],
                  charts: Sequence[Mapping[str, Any]] = ()) -> None:  # fmt: skip
        """A saved view of the experiment's runs table (MLflow 3's "Views" menu; the link
        `#/experiments/ID/runs?viewStateShareKey=VIEW_ID` opens it): a filter, the columns to
        show ("metrics.`val_acc`", "params.`method`"), the sort (key, ascending), and the charts
        its chart tab opens on (`&compareRunsMode=CHART`), in a section of their own before
        MLflow's generated ones: each a card of the UI's own form ({"type": "SCATTER",
        "xaxis": ..., "yaxis": ...}, {"type": "PARALLEL", ...}, {"type": "LINE", ...})."""
        state = {"searchFilter": search_filter, "orderByKey": order_by[0],
                 "orderByAsc": order_by[1], "startTime": "ALL", "lifecycleFilter": "Active",
                 "datasetsFilter": [], "modelVersionFilter": "All Runs",
                 "selectedColumns": columns, "columnOrder": [], "columnWidths": {},
                 "runsHiddenMode": "SHOW_ALL", "viewMaximized": False, "runListHidden": False,
                 "isAccordionReordered": False, "useGroupedValuesInCharts": True,
                 "hideEmptyCharts": True, "groupBy": None, "groupsExpanded": {},
                 "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                           "selectedXAxisMetricKey": ""}}  # fmt: skip
        if charts:
            section = {"uuid": f"{view_id}-charts", "name": name, "display": True,
                       "isReordered": True, "deleted": False, "isGenerated": False}  # fmt: skip
            state.update(isAccordionReordered=True, compareRunSections=[section],
                         compareRunCharts=[{"uuid": f"{view_id}-chart-{i}", "deleted": False,
                                            "isGenerated": False, "runsCountToCompare": 1000,
                                            "metricSectionId": section["uuid"], **chart}
                                           for i, chart in enumerate(charts)])  # fmt: skip
        now = int(time.time() * 1000)
        envelope = {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
        self.client.set_experiment_tag(self.experiment_id, f"{VIEW_TAG_PREFIX}{view_id}",
                                       json.dumps(envelope))  # fmt: skip

    def describe_study(self, markdown: str) -> None:
        """The parent run's description, which the UI shows on the run's page. MLflow keeps a
        tag's first 8,000 characters and says so in a warning nobody reads; a longer one is
        cut here, at a line, and says so itself."""
        assert self.parent_run_id is not None
        if len(markdown) > MAX_TAG_VAL_LENGTH:
            cut = "\n\n(cut to MLflow's limit; the rest is in the study's files and log)"
            kept = markdown[: MAX_TAG_VAL_LENGTH - len(cut)]
            markdown = kept[: kept.rfind("\n") if "\n" in kept else len(kept)] + cut
        self.client.set_tag(self.parent_run_id, DESCRIPTION_TAG, markdown)

    def log_dataset(self, name: str, digest: str, splits: Mapping[str, int]) -> None:
        """The study's data as an MLflow dataset input of the parent run, and so of every
        trial's run (`trial_run`): the runs table's Dataset column names it; its profile holds
        the split sizes."""
        assert self.parent_run_id is not None
        sizes = "/".join(str(n) for n in splits.values())
        dataset = Dataset(name=f"{name} ({sizes})", digest=digest[:8], source_type="code",
                          source=json.dumps({"kdtune_dataset": name}),
                          profile=json.dumps({"num_rows": dict(splits)}))  # fmt: skip
        context = InputTag(key=MLFLOW_DATASET_CONTEXT, value="training")
        self.client.log_inputs(self.parent_run_id, [DatasetInput(dataset, tags=[context])])

    def summarise_configurations(self, summaries: Sequence[Mapping[str, Any]]) -> None:
        """A child run per configuration, beside its trials' runs: each summary's `name`,
        `params` (set once: MLflow keeps a run's params), `metrics` and `pareto`, tagged with
        its `config_key` and `method`. A second write (the end of a resumed study) updates the
        same runs."""
        assert self.parent_run_id is not None
        found = self.client.search_runs(
            [self.experiment_id], max_results=50000,
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and "
                          f"tags.`{SUMMARY_TAG}` = 'true'")  # fmt: skip
        runs = {run.data.tags.get(CONFIG_TAG): run.info.run_id for run in found}
        now = int(time.time() * 1000)
        for summary in summaries:
            run_id = runs.get(summary["config_key"])
            if run_id is None:
                run_id = self.client.create_run(self.experiment_id, run_name=summary["name"], tags={
                    "mlflow.parentRunId": self.parent_run_id, SUMMARY_TAG: "true",
                    CONFIG_TAG: summary["config_key"],
                    METHOD_TAG: summary["method"]}).info.run_id  # fmt: skip
                self._log(run_id, params=summary["params"])
            self._log(run_id, metrics=[Metric(k, v, now, 0) for k, v in
                                       scalar_metrics(summary["metrics"]).items()],
                      tags=pareto_tags(summary["pareto"]))  # fmt: skip
            self.client.set_terminated(run_id)

    def tag_pareto(self, flags: Mapping[str, bool]) -> None:
        """flags: child run id -> on the Pareto front."""
        for run_id, on_front in flags.items():
            self._log(run_id, tags=pareto_tags(on_front))

    def close_abandoned(self, run_id: str) -> int:
        """Mark KILLED a parent run of this experiment that a dead driver left RUNNING, and its
        trials' runs still RUNNING; how many runs that closed (0: none to close)."""
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return 0
        if run.info.experiment_id != self.experiment_id or run.info.status != "RUNNING":
            return 0
        children = self.client.search_runs(
            [self.experiment_id], max_results=50_000,
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = "
                          "'RUNNING'")  # fmt: skip
        for abandoned in [*children, run]:
            self.client.set_terminated(abandoned.info.run_id, status="KILLED")
        return 1 + len(children)

    def end_study(self, status: str = "FINISHED") -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, status=status)
