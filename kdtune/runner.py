"""Trials on Ray Tune with their record in MLflow: the one place that builds the Tuner and opens
a study's MLflow parent run (Ray itself is started by `kdtune.cluster`, the study folder guarded
by `kdtune.storage`).

`fit_trials` runs any trainable under a tracking callback and closes the parent run; `run_study`
(kdtune.study, KD searches and grids) and `run_trials` (below: any function trainable over
explicit configs, such as the self-distillation study) are its two callers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from ray import tune

from kdtune import atomic, tables
from kdtune.callback import (
    FINISHED_STATES,
    Route,
    SnapshotPacer,
    TrackingCallback,
    reconcile,
)
from kdtune.cluster import check_resources, init_ray
from kdtune.config import ConfigError, Log, StudyFailed, StudyInterrupted, one_line
from kdtune.outcome import trial_rows
from kdtune.searchers import PointsSearcher
from kdtune.storage import (
    ROUTE,
    SNAPSHOTS,
    StudyStorage,
    check_resume_safe,
    check_tune_state,
    check_writable,
    for_this_launch,
    study_lock,
)
from kdtune.tracking import StudyTracker, check_store, choose_store

PARENT_RUN_FILE = "mlflow_parent_run_id"
CHECKPOINTS_KEPT = 2  # per trial: the last and the one before (see _tuner)
TRACKING_URI_FILE = "mlflow_tracking_uri"
_T = TypeVar("_T")


@dataclass(frozen=True)
class StudyResult:
    table: pa.Table  # one row per trial
    front: pa.Table  # the Pareto-optimal rows
    study_dir: Path
    parent_run_id: str
    teacher_metrics: dict[str, float]
    storage: StudyStorage
    tracking_uri: str
    experiment_id: str
    # with `reseed`: the re-run Pareto configurations, mean +- std over the seeds, each with
    # `front` (on the front of the means) and `search_{objective}` (the search's own value)
    seed_front: list[dict[str, Any]] | None = None
    files: list[Path] = field(default_factory=list)  # what the study wrote, `publish` adds
    link: str = ""  # the UI route that shows the study best (a saved view of its runs)

    def publish(
        self, files: Sequence[Path], metrics: Mapping[str, float] | None = None, *,
        summary: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        """A study script's own outputs (figures, figures of merit, and its `summary` rows as
        summary.parquet): onto the study's MLflow parent run and next to its other results."""
        if summary is not None:
            tables.write_table(tables.summary_table(summary), self.study_dir / "summary.parquet")
            files = [*files, self.study_dir / "summary.parquet"]
        tracker = StudyTracker.of_run(self.tracking_uri, self.parent_run_id)
        tracker.log_study_artifacts(files)
        if metrics:
            tracker.log_study_metrics(metrics)
        self.storage.publish(*files)
        self.files.extend(path for path in files if path not in self.files)


def environment_tags() -> dict[str, str]:
    """Library versions and the git commit, so every run says what produced it."""
    tags = {
        f"version.{p}": metadata.version(p) for p in ("kdtune", "torch", "ray", "optuna", "mlflow")
    }
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    tags["git_commit"] = commit or "unknown"
    return tags


def prepare_storage(
    storage_path: str, name: str, tracking_uri: str | None, resume: bool, log: Log
) -> tuple[StudyStorage, str]:  # fmt: skip
    """The study's folder (writable, and safe to resume from) and its MLflow store
    (`tracking.choose_store`), both checked before anything starts."""
    storage = StudyStorage.of(storage_path, name)
    if resume:
        check_resume_safe(storage)
        check_tune_state(storage, log)
    recorded = storage.read_text(TRACKING_URI_FILE) if resume else None
    uri = check_store(choose_store(tracking_uri, recorded.strip() if recorded else None))
    check_writable(storage.local_dir)
    return storage, uri


def can_resume(storage: StudyStorage) -> bool:
    """Tune saved a state of this study that it can go on from."""
    return tune.Tuner.can_restore(storage.experiment_path)


def check_resumable(storage: StudyStorage, saved: Mapping[str, Any] | None,
                    changes: tuple[list[str], Mapping[str, Any]], log: Log) -> None:  # fmt: skip
    """--resume of a study that never ran, or with a spec that differs from its first launch's
    (`config.resume_changes`) in what its trials were drawn, trained or judged under, is a
    ConfigError; what it keeps from the first launch although asked otherwise, it says."""
    if saved is None and not can_resume(storage):
        raise ConfigError(f"name: no study {storage.name!r} has run in {storage.root}, so "
                          "there is nothing to resume; run it without --resume to start it, "
                          "or give the --storage it ran in")  # fmt: skip
    refused, kept = changes
    if refused:
        raise ConfigError(f"resume: the study began with another spec ({'; '.join(refused)}); "
                          "its trials so far were drawn and judged under that one: resume "
                          "with it, or start this spec under another --name")  # fmt: skip
    if kept:
        shown = ", ".join(f"{key} = {value!r}" for key, value in kept.items())
        log(f"study: a resume keeps the first launch's {shown} (Tune's saved settings); for "
            "more trials, start a study under another --name")


@dataclass(frozen=True)
class ParentRun:
    """A study's MLflow parent run, opened: the study's folder, the tracker that writes to its
    store, the run's id and tags. (Words: "study" is kdtune's study, `optuna_study` Optuna's,
    and a parent run MLflow's record of the study.)"""

    storage: StudyStorage
    tracker: StudyTracker
    run_id: str
    tags: dict[str, str]
    resumed: bool  # the parent run existed before (a --resume that found it)


def open_parent_run(
    name: str, storage: StudyStorage, params: Mapping[str, Any], *, resume: bool,
    tracking_uri: str, log: Log, tags: Mapping[str, str] | None = None,
) -> ParentRun:  # fmt: skip
    """The study's MLflow parent run, re-opened on resume (its id and store are kept beside the
    results). A resumed study whose store does not hold its parent run (another
    --tracking-uri, a copied folder) is recorded anew there, finished trials included. `tags`
    (what the study trains on, say) go on the parent and every child run, beside the versions."""
    tracker = StudyTracker(name, tracking_uri)
    last = (storage.read_text(PARENT_RUN_FILE) or "").strip()
    if not resume and last and (closed := tracker.close_abandoned(last)):
        log(f"mlflow: the last launch of {name!r} (parent run {last}) was left running by a "
            f"driver that died; marked it and {closed - 1} of its trials KILLED")
    saved = last if resume else None
    tags = {**environment_tags(), **(tags or {})}
    resumed = bool(saved) and tracker.reopen_study(saved)
    if saved and not resumed:
        log(f"mlflow: the parent run {saved} of {name!r} is not in {tracking_uri}; "
            "recording the study there anew (finished trials are copied from Tune's records)")
    parent_id = tracker.parent_run_id if resumed else tracker.start_study(name, params, tags)
    assert parent_id is not None
    atomic.write_text(storage.local_dir / PARENT_RUN_FILE, parent_id)
    atomic.write_text(storage.local_dir / TRACKING_URI_FILE, tracking_uri)
    storage.publish(storage.local_dir / PARENT_RUN_FILE, storage.local_dir / TRACKING_URI_FILE)
    log(f"mlflow: parent run {parent_id} in experiment {name!r} at {tracker.tracking_uri}")
    return ParentRun(storage, tracker, parent_id, tags, resumed)


def trial_folder(trial: Any) -> str:
    """A trial's folder name: its trainable and id (Tune's default lists the whole config)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def trials_config(name: str, search_alg: Any, num_samples: int, max_concurrent_trials: int,
                  scheduler: Any = None) -> tune.TuneConfig:  # fmt: skip
    """How Tune runs a study's trials: worker processes reused between trials (no new Python,
    torch import or CUDA context per trial), short trial folder names, Tune's state saved
    whenever a trial is added or ends (`scheduler.SnapshotOnChange`, unless one is given)."""
    from kdtune.scheduler import SnapshotOnChange

    scheduler = scheduler or SnapshotOnChange(name)
    return tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                           max_concurrent_trials=max_concurrent_trials, reuse_actors=True,
                           trial_dirname_creator=trial_folder)  # fmt: skip


def _tuner(
    name: str, trainable: Any, tune_config: tune.TuneConfig, callback: TrackingCallback,
    storage: StudyStorage, *, resume: bool, max_failures: int, log: Log,
) -> tune.Tuner:  # fmt: skip
    path = storage.experiment_path
    # Tune forces a snapshot of every trial's state when a trial has made CHECKPOINTS_KEPT
    # checkpoints since the last one (else the snapshot could name a checkpoint it deleted);
    # with two kept, a trial checkpointing every checkpoint_interval_s rarely forces one beyond
    # kdtune's paced ones (scheduler.SnapshotPacer), where with one kept each trial's end forced
    # a snapshot whose cost grows with the study. Silence Tune's warning on frequent snapshots.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if resume and tune.Tuner.can_restore(path):
        log(f"study: resuming from {path}")
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    if resume:
        log(f"study: nothing to resume at {path}; starting the study")
    return tune.Tuner(
        trainable,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage.root,
            callbacks=[callback],
            verbose=0,  # kdtune prints one line per finished trial instead
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
        ),
    )


def fit_trials(
    parent: ParentRun, name: str, trainable: Any, tune_config: tune.TuneConfig,
    objectives: Sequence[str], *, resume: bool, max_failures: int, log: Log,
    post_process: Callable[[list[Any]], _T], label_keys: Mapping[str, Sequence[str]],
    search_ended: Callable[[], bool] = lambda: False,
) -> _T:  # fmt: skip
    """Run the trials with the MLflow callback, complete every trial's record from Tune's
    (`callback.reconcile`), post-process Tune's trials, and close the parent run: FINISHED,
    KILLED if the study was interrupted (then StudyInterrupted), FAILED if anything raised.
    Tune's num_samples is the most trials the study runs; it ran them all when every trial
    finished and either all were made or `search_ended()` (the searcher had no more)."""
    where = Route(parent.tracker.tracking_uri, parent.run_id, parent.tags, objectives,
                  tune_config.num_samples, label_keys)  # fmt: skip
    for_this_launch(ROUTE, name, where)
    for_this_launch(SNAPSHOTS, name, SnapshotPacer())
    status, unfinished = "FAILED", 0
    try:
        with _sigterm_stops_tune():
            tuner = _tuner(name, trainable, tune_config, TrackingCallback(name), parent.storage,
                           resume=resume, max_failures=max_failures, log=log)  # fmt: skip
            grid = tuner.fit()
        trials = _trials(grid, where.running)
        written = reconcile(trials, grid.filesystem, parent.tracker, where)
        if written:
            log(f"mlflow: wrote {written} reports the record lacked, from Tune's own records")
        outcome = post_process(trials)
        unfinished = sum(t.status not in FINISHED_STATES for t in trials)
        if not search_ended():
            unfinished += max(0, tune_config.num_samples - len(trials))
        status = "KILLED" if unfinished else "FINISHED"
        parent.tracker.end_study(status)
    except KeyboardInterrupt:
        _quietly(parent.tracker.end_study, "KILLED")
        raise StudyInterrupted(f"{name}: stopped before its trials ended; run the same "
                               "command with --resume to continue it") from None  # fmt: skip
    except Exception as error:
        _quietly(parent.tracker.end_study, "FAILED")  # the store may be what failed
        raise StudyFailed(f"{name}: {one_line(error)}; what Tune finished is kept: fix that "
                          "and run the same command with --resume") from error  # fmt: skip
    if unfinished:
        raise StudyInterrupted(f"{name}: interrupted with {unfinished} of "
                               f"{tune_config.num_samples} trials unfinished (results.parquet "
                               "marks them UNFINISHED); run the same command with --resume to "
                               "continue it")  # fmt: skip
    return outcome


def _trials(grid: Any, running: set[str]) -> list[Any]:
    """Tune's trials of a finished fit, with their statuses (a ResultGrid's results have none),
    in the order Tune created them: the fit's own trial objects, which a full disk cannot have
    truncated; if a Ray release hides them, read back from the experiment's saved state.

    After an interrupt, Tune's clean-up marks each trial still running TERMINATED in memory
    (its saved state, written before, says RUNNING): those, the trials this launch started
    and never saw end (`running`), are RUNNING again, or their rows, their MLflow runs and the
    front took them for done (or stopped early by the scheduler, short of their budget)."""
    analysis = getattr(grid, "_experiment_analysis", None)
    if analysis is None:
        analysis = tune.ExperimentAnalysis(grid.experiment_path,
                                           storage_filesystem=grid.filesystem)  # fmt: skip
    trials = list(analysis.trials)
    for trial in trials:
        if trial.trial_id in running and trial.status == "TERMINATED":
            trial.set_status("RUNNING")
    return trials


def _quietly(action: Callable[..., Any], *args: Any) -> None:
    """Best effort, on the way out of an error that is reported already (which the user sees)."""
    with suppress(Exception):
        action(*args)


@contextmanager
def _sigterm_stops_tune() -> Iterator[None]:
    """SIGTERM (a job scheduler, a closed session) stops the study as Ctrl-C does: Tune saves
    its state and the record says the study was interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_trials(
    name: str,
    trainable: Callable[[dict[str, Any]], None],
    points: Sequence[Mapping[str, Any]],
    *,
    params: Mapping[str, Any],
    storage_path: str = "./ray_results",
    tracking_uri: str | None = None,
    resume: bool = False,
    max_concurrent_trials: int = 2,
    cpus_per_trial: float = 1.0,
    progress_metrics: Sequence[str] = (),
    label_keys: Sequence[str] = (),
    question: str = "",
    log: Log = print,
) -> StudyResult:
    """Any Ray Tune function trainable over an explicit list of configs, with run_study's
    handling of Ray, MLflow (parent run with `params`, a child run per trial, named by its
    `label_keys` values), resume and the Parquet table; there is no teacher, search or front."""
    storage, uri = prepare_storage(storage_path, name, tracking_uri, resume, log)
    with study_lock(storage.local_dir, name):
        init_ray(log)
        check_resources(cpus_per_trial, 0, log)
        parent = open_parent_run(name, storage, params, resume=resume, tracking_uri=uri, log=log)
        parent.tracker.describe_study(f"### {question or name}\n\n{len(points)} trials, one per "
                                     "configuration; the study's tables (`results.parquet`, "
                                     "`summary.parquet`) and figures are in Artifacts.")
        return _fit_points(parent, name, trainable, points, resume=resume,
                           max_concurrent_trials=max_concurrent_trials,
                           cpus_per_trial=cpus_per_trial, progress_metrics=progress_metrics,
                           label_keys=label_keys, log=log)  # fmt: skip


def _fit_points(
    parent: ParentRun, name: str, trainable: Callable[[dict[str, Any]], None],
    points: Sequence[Mapping[str, Any]], *, resume: bool, max_concurrent_trials: int,
    cpus_per_trial: float, progress_metrics: Sequence[str], label_keys: Sequence[str], log: Log,
) -> StudyResult:  # fmt: skip
    storage = parent.storage
    tune_config = trials_config(name, PointsSearcher([dict(p) for p in points]), len(points),
                                max_concurrent_trials)  # fmt: skip

    def post_process(trials: list[Any]) -> pa.Table:
        table = tables.to_table(trial_rows(trials, parent.tracker.trial_runs()))
        tables.write_table(table, storage.local_dir / "results.parquet")
        parent.tracker.log_study_artifacts([storage.local_dir / "results.parquet"])
        storage.publish(storage.local_dir / "results.parquet")
        return table

    log(f"study: {len(points)} trials, {max_concurrent_trials} at a time")
    trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial})
    table = fit_trials(parent, name, trainable, tune_config, progress_metrics, resume=resume,
                       max_failures=2, log=log, post_process=post_process,
                       label_keys={"": label_keys})  # fmt: skip
    return StudyResult(table, table.slice(0, 0), storage.local_dir, parent.run_id, {}, storage,
                       parent.tracker.tracking_uri, parent.tracker.experiment_id,
                       files=[storage.local_dir / "results.parquet"])  # fmt: skip
