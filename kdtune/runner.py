"""Trials on Ray Tune with their record in MLflow: the one place that starts Ray, builds the Tuner
and opens a study's MLflow parent run.

`fit_trials` runs any trainable under a tracking callback and closes the parent run; `run_study`
(kdtune.study, KD searches and grids) and `run_trials` (below: any function trainable over
explicit configs, such as the self-distillation study) are its two callers.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import math
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
from ray import tune

from kdtune import atomic, cluster_in_sight, results
from kdtune.callback import (
    FINISHED_STATES,
    Route,
    TrackingCallback,
    reconcile,
    stopped_at,
    trial_failure,
)
from kdtune.config import ConfigError, StudyFailed, StudyInterrupted, one_line
from kdtune.reports import last_report
from kdtune.search import points_searcher, quiet_optuna
from kdtune.storage import ROUTE, StudyStorage, for_this_launch
from kdtune.tracking import StudyTracker, check_store, choose_store, run_route

PARENT_RUN_FILE = "mlflow_parent_run_id"
CHECKPOINTS_KEPT = 2  # per trial: the last and the one before (see _tuner)
STUDY_FILE = "study.json"  # the study's id and the spec of its first launch
TRACKING_URI_FILE = "mlflow_tracking_uri"
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
            results.write_table(results.summary_table(summary), self.study_dir / "summary.parquet")
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


def on_cluster() -> bool:
    """A Ray cluster will run the trials: RAY_ADDRESS, `ray start` here, or Ray already joined."""
    import ray

    return cluster_in_sight() or ray.is_initialized()


def set_verbosity(verbose: bool) -> None:
    """Ray, Tune, MLflow and Optuna print their own notices between kdtune's lines (Ray's token
    notice, Tune's experiment box and its TensorBoard hint, which points away from kdtune's
    record, Optuna's "new study", MLflow's schema set-up); kdtune's own lines say what matters,
    so those are quiet unless `verbose`. Errors always show."""
    global _RAY_LOG_LEVEL
    quiet_optuna(verbose)
    if verbose:
        _RAY_LOG_LEVEL = logging.INFO
        return
    _RAY_LOG_LEVEL = logging.ERROR  # ray.init sets Ray's own loggers to its `logging_level`
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's older reporter, silent at verbose=0
    for name, level in (("ray", logging.ERROR), ("mlflow", logging.WARNING),
                        ("alembic", logging.WARNING)):  # fmt: skip
        logging.getLogger(name).setLevel(level)


_RAY_LOG_LEVEL = logging.INFO


def init_ray(log: Log, gpus: float = 0.0) -> None:
    """Start (or join) Ray, unless this process has already. `gpus`: logical GPUs a Ray started
    here declares (a simulated study's; a cluster, or a Ray already running, has its own)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False,
                 logging_level=_RAY_LOG_LEVEL)  # fmt: skip
    else:
        # A local Ray binds to loopback only (see kdtune/__init__.py) and starts no dashboard.
        declared = {"num_gpus": math.ceil(gpus)} if gpus and not cluster_in_sight() else {}
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=_RAY_LOG_LEVEL,
                 **declared)  # fmt: skip
    resources = ray.cluster_resources()
    log(f"ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")


def check_local_resources(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """On a machine of its own (no cluster to join or grow), a trial that asks for more CPUs or
    GPUs than the machine has would wait forever: said before the data, the teacher or Ray
    (which would take minutes, hours for a CIFAR teacher, to reach the same answer)."""
    if on_cluster():
        return  # what a cluster has, Ray says once it answers (check_resources)
    import torch

    for name, key, asked, have in (
        ("cpus_per_trial", "CPU", cpus_per_trial, os.cpu_count() or 1),
        ("gpus_per_trial", "GPU", gpus_per_trial, torch.cuda.device_count()),
    ):  # fmt: skip
        if asked > have:
            raise _too_much(name, key, asked, have)


def _too_much(name: str, key: str, asked: float, have: float) -> ConfigError:
    return ConfigError(f"{name}: a trial asks for {asked:g} {key}s, but this machine has "
                       f"{have:g}; ask for at most {have:g} (--{name.replace('_', '-')}) or run "
                       "on a cluster")  # fmt: skip


def check_resources(cpus_per_trial: float, gpus_per_trial: float, log: Log) -> None:
    """A trial that asks for more than Ray has would wait forever: on a fixed machine that is an
    input error; on an autoscaling cluster it is what the autoscaler is for, so say so."""
    import ray

    total = ray.cluster_resources()
    for name, key, asked in (("cpus_per_trial", "CPU", cpus_per_trial),
                              ("gpus_per_trial", "GPU", gpus_per_trial)):  # fmt: skip
        have = total.get(key, 0.0)
        if asked <= have:
            continue
        if cluster_in_sight():  # whose autoscaler may add nodes
            log(f"ray: a trial needs {asked:g} {key}s and the cluster has {have:g} now; trials "
                "wait until the autoscaler adds nodes (Ctrl-C stops the study)")
            continue
        raise _too_much(name, key, asked, have)


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

    init_ray(log)
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


@contextmanager
def study_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold the study folder for this process: a second study of the same name in the same
    folder would share Tune's state and overwrite the results. The OS releases the lock when
    the process ends, however it ends, so a crashed study can be resumed at once."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(f"name: study {name!r} is running already in {folder} ({holder}); "
                              "wait for it to end, or give this one another --name") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_resume_safe(storage: StudyStorage) -> None:
    """--resume unpickles Tune's state (tuner.pkl, the searcher's state) from the study folder,
    so whoever can write there can run code as the user: refuse a local folder, or a file in
    it, that another user owns or that group or others may write."""
    if storage.remote:
        return
    folder = Path(storage.experiment_path)
    if not folder.exists():
        return
    for path in (Path(storage.root), folder, *(p for p in folder.iterdir() if p.is_file())):
        info = path.stat()
        writable = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if info.st_uid != os.getuid() or writable:
            why = "another user owns it" if info.st_uid != os.getuid() else (
                f"group or others may write it (mode {stat.filemode(info.st_mode)})")
            raise ConfigError(f"storage_path: will not resume from {path}: {why}, and --resume "
                              "loads pickled state from the study folder, which would run code "
                              "as you; `chmod go-w` it (and check what is in it), or start the "
                              "study anew without --resume")  # fmt: skip


def check_tune_state(storage: StudyStorage, log: Log) -> None:
    """Tune writes its experiment state in place, so a disk that fills up can cut it short, and
    Tune then restarts the study from nothing. Set a damaged state aside when an older one is
    there to fall back on; else say that this study cannot resume."""
    folder = Path(storage.experiment_path)
    states = sorted(folder.glob("experiment_state-*.json")) if not storage.remote else []
    while states:
        latest = states.pop()
        try:
            json.loads(latest.read_text())
            return
        except (ValueError, UnicodeDecodeError):
            if not states:
                raise ConfigError(f"storage_path: Tune's saved state {latest} is cut short (a "
                                  "disk that filled up while Tune wrote it?), so this study "
                                  "cannot resume; run it anew under another --name (what "
                                  "finished is in results.parquet and MLflow)") from None
            latest.rename(latest.with_name(latest.name + ".damaged"))
            log(f"study: {latest.name} is cut short; resuming from the state saved before it")


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


def study_file(storage: StudyStorage) -> dict[str, Any] | None:
    """The study folder's STUDY_FILE ({"id", "spec"}), or None where none was written (a study
    that never started, or one started by a kdtune older than the file)."""
    text = storage.read_text(STUDY_FILE)
    if text is None:
        return None
    try:
        return dict(json.loads(text))
    except (ValueError, TypeError):
        raise ConfigError(f"storage_path: {storage.experiment_path}/{STUDY_FILE} is damaged; "
                          "move it away to resume without the checks it allows (the same "
                          "spec, the study's own Optuna study)") from None  # fmt: skip


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


def study_identity(saved: Mapping[str, Any] | None, resume: bool) -> str:
    """The study's id: its folder's (a fresh start in the same folder replaces the same study),
    else a new one; "" for a resumed study started by a kdtune older than STUDY_FILE."""
    if saved is not None:
        return str(saved["id"])
    return "" if resume else uuid.uuid4().hex


def keep_study_file(storage: StudyStorage, study_id: str, spec: Mapping[str, Any]) -> None:
    atomic.write_text(storage.local_dir / STUDY_FILE, json.dumps({"id": study_id, "spec": spec}))
    storage.publish(storage.local_dir / STUDY_FILE)


@dataclass(frozen=True)
class OpenStudy:
    storage: StudyStorage
    tracker: StudyTracker
    parent_id: str
    tags: dict[str, str]
    resumed: bool  # the parent run existed before (a --resume that found it)


def open_study(
    name: str, storage: StudyStorage, params: Mapping[str, Any], *, resume: bool,
    tracking_uri: str, log: Log, tags: Mapping[str, str] | None = None,
) -> OpenStudy:  # fmt: skip
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
    return OpenStudy(storage, tracker, parent_id, tags, resumed)


def trial_folder(trial: Any) -> str:
    """A trial's folder name: its trainable and id (Tune's default lists the whole config)."""
    return f"{trial.trainable_name}_{trial.trial_id}"


def trials_config(search_alg: Any, num_samples: int, max_concurrent_trials: int,
                  scheduler: Any = None) -> tune.TuneConfig:  # fmt: skip
    """How Tune runs a study's trials: worker processes reused between trials (no new Python,
    torch import or CUDA context per trial), short trial folder names, Tune's state saved
    whenever a trial is added or ends (`scheduler.SnapshotOnChange`, unless one is given)."""
    from kdtune.scheduler import SnapshotOnChange

    scheduler = scheduler or SnapshotOnChange()
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
    study: OpenStudy, name: str, trainable: Any, tune_config: tune.TuneConfig,
    objectives: Sequence[str], *, resume: bool, max_failures: int, log: Log,
    post_process: Callable[[list[Any]], _T], label_keys: Mapping[str, Sequence[str]],
) -> _T:  # fmt: skip
    """Run the trials with the MLflow callback, complete every trial's record from Tune's
    (`callback.reconcile`), post-process Tune's trials, and close the parent run: FINISHED,
    KILLED if the study was interrupted (then StudyInterrupted), FAILED if anything raised."""
    where = Route(study.tracker.tracking_uri, study.parent_id, study.tags, objectives,
                  tune_config.num_samples, label_keys)  # fmt: skip
    for_this_launch(ROUTE, name, where)
    status, unfinished = "FAILED", 0
    try:
        with _sigterm_stops_tune():
            tuner = _tuner(name, trainable, tune_config, TrackingCallback(name), study.storage,
                           resume=resume, max_failures=max_failures, log=log)  # fmt: skip
            grid = tuner.fit()
        trials = _trials(grid)
        written = reconcile(trials, grid.filesystem, study.tracker, where)
        if written:
            log(f"mlflow: wrote {written} reports the record lacked, from Tune's own records")
        outcome = post_process(trials)
        unfinished = tune_config.num_samples - sum(t.status in FINISHED_STATES for t in trials)
        status = "KILLED" if unfinished else "FINISHED"
        study.tracker.end_study(status)
    except KeyboardInterrupt:
        _quietly(study.tracker.end_study, "KILLED")
        raise StudyInterrupted(f"{name}: stopped before its trials ended; run the same "
                               "command with --resume to continue it") from None  # fmt: skip
    except Exception as error:
        _quietly(study.tracker.end_study, "FAILED")  # the store may be what failed
        raise StudyFailed(f"{name}: {one_line(error)}; what Tune finished is kept: fix that "
                          "and run the same command with --resume") from error  # fmt: skip
    if unfinished:
        raise StudyInterrupted(f"{name}: interrupted with {unfinished} of "
                               f"{tune_config.num_samples} trials unfinished (results.parquet "
                               "marks them UNFINISHED); run the same command with --resume to "
                               "continue it")  # fmt: skip
    return outcome


def _trials(grid: Any) -> list[Any]:
    """Tune's trials of a finished fit, with their statuses (a ResultGrid's results have none),
    in the order Tune created them: the fit's own trial objects, which a full disk cannot have
    truncated; if a Ray release hides them, read back from the experiment's saved state."""
    analysis = getattr(grid, "_experiment_analysis", None)
    if analysis is None:
        analysis = tune.ExperimentAnalysis(grid.experiment_path,
                                           storage_filesystem=grid.filesystem)  # fmt: skip
    return list(analysis.trials)


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


def trial_rows(trials: Sequence[Any], run_ids: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per Tune trial: its config, its last metrics, its status (TERMINATED: it ran its
    budget; STOPPED: the scheduler stopped it at `stopped_at`, its metrics those of that epoch;
    ERROR; UNFINISHED: an interrupted study left it running) and its child run's id."""
    rows = []
    for trial in trials:
        metrics = {k: v for k, v in last_report(trial.last_result).items() if k != "config"}
        status = trial.status if trial.status in FINISHED_STATES else "UNFINISHED"
        stopped = stopped_at(trial)
        rows.append({**trial.config, **metrics, "trial_id": trial.trial_id,
                     "status": "STOPPED" if stopped is not None else status,
                     "stopped_at": stopped,
                     "error": trial_failure(trial) if status == "ERROR" else None,
                     "mlflow_run_id": run_ids.get(trial.trial_id)})  # fmt: skip
    return rows


def closing_lines(result: StudyResult) -> str:
    """The last thing a study prints: every file it wrote, and how to see it all in MLflow."""
    local = result.tracking_uri.startswith(("sqlite:", "file:", "/"))
    where = result.link or (run_route(result.experiment_id, result.parent_run_id)
                            + "?workflowType=machine_learning")  # fmt: skip
    lines = [f"\nThe study wrote, in {result.study_dir}:"]
    lines += [f"  {path.name}" for path in result.files]
    lines.append("and logged them on its MLflow parent run, with one child run per trial.")
    if local:
        lines.append(f"See them:  kdtune ui --tracking-uri {shlex.quote(result.tracking_uri)}   "
                     "then open "
                     f"http://127.0.0.1:5000/{where}")  # fmt: skip
    else:
        lines.append(f"See them:  {result.tracking_uri.rstrip('/')}/{where}")
    if (result.study_dir / "optuna.db").exists():
        lines.append(f"The search's Optuna study is in optuna.db there:  kdtune dashboard "
                     f"{shlex.quote(str(result.study_dir))}")  # fmt: skip
    return "\n".join(lines)


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
        study = open_study(name, storage, params, resume=resume, tracking_uri=uri, log=log)
        study.tracker.describe_study(f"### {question or name}\n\n{len(points)} trials, one per "
                                     "configuration; the study's tables (`results.parquet`, "
                                     "`summary.parquet`) and figures are in Artifacts.")
        return _fit_points(study, name, trainable, points, resume=resume,
                           max_concurrent_trials=max_concurrent_trials,
                           cpus_per_trial=cpus_per_trial, progress_metrics=progress_metrics,
                           label_keys=label_keys, log=log)  # fmt: skip


def _fit_points(
    study: OpenStudy, name: str, trainable: Callable[[dict[str, Any]], None],
    points: Sequence[Mapping[str, Any]], *, resume: bool, max_concurrent_trials: int,
    cpus_per_trial: float, progress_metrics: Sequence[str], label_keys: Sequence[str], log: Log,
) -> StudyResult:  # fmt: skip
    storage = study.storage
    tune_config = trials_config(points_searcher([dict(p) for p in points]), len(points),
                                max_concurrent_trials)  # fmt: skip

    def post_process(trials: list[Any]) -> pa.Table:
        table = results.to_table(trial_rows(trials, study.tracker.trial_runs()))
        results.write_table(table, storage.local_dir / "results.parquet")
        study.tracker.log_study_artifacts([storage.local_dir / "results.parquet"])
        storage.publish(storage.local_dir / "results.parquet")
        return table

    log(f"study: {len(points)} trials, {max_concurrent_trials} at a time")
    trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial})
    table = fit_trials(study, name, trainable, tune_config, progress_metrics, resume=resume,
                       max_failures=2, log=log, post_process=post_process,
                       label_keys={"": label_keys})  # fmt: skip
    return StudyResult(table, table.slice(0, 0), storage.local_dir, study.parent_id, {}, storage,
                       study.tracker.tracking_uri, study.tracker.experiment_id,
                       files=[storage.local_dir / "results.parquet"])  # fmt: skip
