"""Trials on Ray Tune with their record in MLflow: the one place that starts Ray, builds the Tuner
and opens a study's MLflow parent run.

`fit_trials` runs any trainable under a tracking callback and closes the parent run; `run_study`
(kdtune.study, KD searches and grids) and `run_trials` (below: any function trainable over
explicit configs, such as the self-distillation study) are its two callers.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from ray import tune

from kdtune import atomic, results
from kdtune.callback import TrackingCallback, failure_reason
from kdtune.config import ConfigError
from kdtune.search import points_searcher
from kdtune.storage import StudyStorage
from kdtune.tracking import StudyTracker
from kdtune.trainable import EPOCH_HISTORY

PARENT_RUN_FILE = "mlflow_parent_run_id"
_T = TypeVar("_T")
Log = Callable[[str], None]


@dataclass(frozen=True)
class StudyResult:
    table: pa.Table  # one row per trial
    front: pa.Table  # the Pareto-optimal rows
    study_dir: Path
    parent_run_id: str
    teacher_metrics: dict[str, float]
    storage: StudyStorage
    tracking_uri: str
    # with `reseed`: the re-run Pareto configurations, mean +- std over the seeds, each with
    # `front` (on the front of the means) and `search_{objective}` (the search's own value)
    seed_front: list[dict[str, Any]] | None = None

    def publish(
        self, files: Sequence[Path], metrics: Mapping[str, float] | None = None, *,
        summary: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        """A study script's own outputs (figures, figures of merit, and its `summary` rows as
        summary.parquet): onto the study's MLflow parent run and next to its other results."""
        if summary is not None:
            results.write_table(results.summary_table(summary), self.study_dir / "summary.parquet")
            files = [*files, self.study_dir / "summary.parquet"]
        tracker = StudyTracker.of_run(self.tracking_uri, self.parent_run_id)
        tracker.log_study_artifacts(files)
        if metrics:
            tracker.log_study_metrics(metrics)
        self.storage.publish(*files)


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


def on_cluster() -> bool:
    """A Ray cluster will run the trials: RAY_ADDRESS, `ray start` here, or Ray already joined."""
    import ray

    return (
        bool(os.environ.get("RAY_ADDRESS"))
        or ray.is_initialized()
        or Path("/tmp/ray/ray_current_cluster").exists()
    )


def init_ray(gpus_per_trial: float, log: Log) -> None:
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            # A local Ray binds to loopback only (see kdtune/__init__.py) and starts no dashboard.
            ray.init(include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    log(f"ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    if gpus_per_trial > 0 and not resources.get("GPU"):
        log("ray: no GPU in the cluster yet; trials wait until the autoscaler adds GPU workers")


def on_study_device(
    gpus_per_trial: float, device: str, work: Callable[..., _T], log: Log
) -> Callable[..., _T]:
    """`work` (teacher training, teacher logits; each takes `device` and `log`) here, or, for a
    GPU study, as a Ray task on a GPU worker: a cluster's head node has no GPU, and a CIFAR
    teacher would take days on its CPUs. A remote task cannot call back into this process's
    `log`, so there it prints."""
    if gpus_per_trial == 0:
        return functools.partial(work, device=device, log=log)
    import ray

    remote = ray.remote(num_cpus=1, num_gpus=1)(work)

    def run(*args: Any, **kwargs: Any) -> _T:
        log(f"{work.__name__}: running on a GPU worker ...")
        return ray.get(remote.remote(*args, **kwargs, log=print))

    return run


def ship_by_value(functions: Sequence[Callable[..., Any]]) -> None:
    """Code defined outside kdtune (a method in a study script, a notebook, a test) reaches the
    Ray workers by value: they need not be able to import the module that defines it."""
    from ray import cloudpickle

    for function in functions:
        module = sys.modules.get(function.__module__)
        if module is not None and module.__name__.split(".")[0] not in ("kdtune", "__main__"):
            cloudpickle.register_pickle_by_value(module)


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".kdtune_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"storage_path: cannot write to {str(folder)!r} ({error.strerror}); "
                          "choose a writable folder with --storage") from None  # fmt: skip


@dataclass(frozen=True)
class OpenStudy:
    storage: StudyStorage
    tracker: StudyTracker
    parent_id: str
    tags: dict[str, str]
    resumed: bool  # the parent run existed before (a --resume that found it)


def open_study(
    name: str, storage: StudyStorage, params: Mapping[str, Any], *, resume: bool,
    tracking_uri: str | None, log: Log,
) -> OpenStudy:  # fmt: skip
    """The study's MLflow parent run, re-opened on resume (its id is kept beside the results)."""
    tracker = StudyTracker(name, tracking_uri)
    saved_parent = storage.read_text(PARENT_RUN_FILE) if resume else None
    previous = saved_parent.strip() if saved_parent else None
    tags = environment_tags()
    parent_id = tracker.start_study(name, params, tags, resume_run_id=previous)
    atomic.write_text(storage.local_dir / PARENT_RUN_FILE, parent_id)
    storage.publish(storage.local_dir / PARENT_RUN_FILE)
    log(f"mlflow: parent run {parent_id} in experiment {name!r} at {tracker.tracking_uri}")
    return OpenStudy(storage, tracker, parent_id, tags, previous is not None)


def trial_folder(trial: Any) -> str:
    """A trial's folder name: its trainable and id (Tune's default lists the whole config)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def trials_config(search_alg: Any, num_samples: int, max_concurrent_trials: int,
                  scheduler: Any = None) -> tune.TuneConfig:  # fmt: skip
    """How Tune runs a study's trials: worker processes reused between trials (no new Python,
    torch import or CUDA context per trial), short trial folder names."""
    return tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                           max_concurrent_trials=max_concurrent_trials, reuse_actors=True,
                           trial_dirname_creator=trial_folder)  # fmt: skip


def _tuner(
    name: str, trainable: Any, tune_config: tune.TuneConfig, callback: TrackingCallback,
    storage: StudyStorage, *, resume: bool, max_failures: int, log: Log,
) -> tune.Tuner:  # fmt: skip
    path = storage.experiment_path
    # Trials checkpoint every epoch and keep one checkpoint, so Tune snapshots the experiment
    # state often; that is cheap and is what makes resume lose nothing: silence its warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if resume and tune.Tuner.can_restore(path):
        log(f"study: resuming from {path}")
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage.root,
            callbacks=[callback],
            verbose=0,  # kdtune prints one line per finished trial instead
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def fit_trials(
    study: OpenStudy, name: str, trainable: Any, tune_config: tune.TuneConfig,
    objectives: Sequence[str], *, resume: bool, max_failures: int, log: Log,
    post_process: Callable[[Any], _T],
) -> _T:  # fmt: skip
    """Run the trials with the MLflow callback, post-process the ResultGrid, close the parent
    run as FINISHED, or FAILED if anything raised."""
    callback = TrackingCallback(name, study.tracker.tracking_uri, study.parent_id, study.tags,
                                objectives, tune_config.num_samples)  # fmt: skip
    status = "FAILED"
    try:
        tuner = _tuner(name, trainable, tune_config, callback, study.storage, resume=resume,
                       max_failures=max_failures, log=log)  # fmt: skip
        outcome = post_process(tuner.fit())
        status = "FINISHED"
    finally:
        study.tracker.end_study(status)
    return outcome


def trial_rows(grid: Any, run_ids: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per trial of a ResultGrid: its config, its last metrics, status and run id."""
    rows = []
    for result in grid:
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        metrics = {k: v for k, v in result.metrics.items() if k != EPOCH_HISTORY}
        rows.append({**result.config, **metrics, "trial_id": trial_id,
                     "status": "ERROR" if result.error else "TERMINATED",
                     "error": failure_reason(result.error) if result.error else None,
                     "mlflow_run_id": run_ids.get(trial_id)})  # fmt: skip
    return rows


def closing_lines(study_dir: Path, tracking_uri: str) -> str:
    return (f"\nresults: {study_dir / 'results.parquet'}\nmlflow: run `kdtune ui` in {Path.cwd()} "
            f"(tracking URI {tracking_uri})")  # fmt: skip


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
    log: Log = print,
) -> StudyResult:
    """Any Ray Tune function trainable over an explicit list of configs, with run_study's
    handling of Ray, MLflow (parent run with `params`, a child run per trial), resume and the
    Parquet table; there is no teacher, search or Pareto front."""
    storage = StudyStorage.of(storage_path, name)
    check_writable(storage.local_dir)
    init_ray(0, log)
    study = open_study(name, storage, params, resume=resume, tracking_uri=tracking_uri, log=log)
    tune_config = trials_config(points_searcher([dict(p) for p in points]), len(points),
                                max_concurrent_trials)  # fmt: skip

    def post_process(grid: Any) -> pa.Table:
        table = results.to_table(trial_rows(grid, study.tracker.trial_runs()))
        results.write_table(table, storage.local_dir / "results.parquet")
        study.tracker.log_study_artifacts([storage.local_dir / "results.parquet"])
        storage.publish(storage.local_dir / "results.parquet")
        return table

    log(f"study: {len(points)} trials, {max_concurrent_trials} at a time")
    trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial})
    table = fit_trials(study, name, trainable, tune_config, progress_metrics, resume=resume,
                       max_failures=2, log=log, post_process=post_process)  # fmt: skip
    log(closing_lines(storage.local_dir, study.tracker.tracking_uri))
    return StudyResult(table, table.slice(0, 0), storage.local_dir, study.parent_id, {}, storage,
                       study.tracker.tracking_uri)  # fmt: skip
