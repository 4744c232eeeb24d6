"""`run_study(spec)`: the face of kdtune. Teacher once, trials on Ray Tune, Optuna search, MLflow.

Flow: validate the spec (before Ray starts) -> load data -> get or train the teacher -> open the
MLflow parent run -> Tuner.fit (or Tuner.restore on resume) with a driver-side tracking callback ->
results table to Parquet -> Pareto front: tags, table, figure.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from ray import tune

from kdtune import atomic, plots, results
from kdtune.callback import TrackingCallback, failure_reason
from kdtune.config import ConfigError, StudySpec, TrialConfig
from kdtune.data import DATASETS, DatasetBundle, load_dataset
from kdtune.engine import resolve_device
from kdtune.methods import METHODS, cacheable_methods, method_defaults
from kdtune.metrics import SPLIT_METRICS
from kdtune.models import MODELS
from kdtune.pareto import hypervolume_2d, pareto_front
from kdtune.search import (
    grid_keys,
    make_scheduler,
    make_searcher,
    points_searcher,
    space_params,
)
from kdtune.storage import StudyStorage
from kdtune.teacher import get_teacher, get_train_logits, train_logits, train_teacher
from kdtune.tracking import StudyTracker
from kdtune.trainable import EPOCH_HISTORY, TrialContext, tune_trainable

PARENT_RUN_FILE = "mlflow_parent_run_id"
_T = TypeVar("_T")
SUMMARY_METRICS = (
    "val_acc",
    "val_ece",
    "test_acc",
    "test_ece",
    "test_nll",
    "test_ece_ts",
    "pareto",
)


def summary_columns(methods: list[str] | tuple[str, ...]) -> list[str]:
    """The printed table: trial, method, the searched hyperparameters, the headline metrics."""
    searched = dict.fromkeys(name for method in methods for name in space_params(method))
    return ["trial_id", "method", *searched, *SUMMARY_METRICS]


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


def objective_names() -> list[str]:
    return [
        f"{split}_{name}{suffix}"
        for split in ("val", "test")
        for name in SPLIT_METRICS
        for suffix in ("", "_ts")
    ]


def _check_name(field: str, value: str, registry: Any) -> None:
    if value not in registry:
        raise ConfigError(f"{field}: unknown {value!r}; choose one of {sorted(registry)}")


def _on_cluster() -> bool:
    """A Ray cluster will run the trials: RAY_ADDRESS, `ray start` here, or Ray already joined."""
    import ray

    return (
        bool(os.environ.get("RAY_ADDRESS"))
        or ray.is_initialized()
        or Path("/tmp/ray/ray_current_cluster").exists()
    )


def _check_teacher_cache(spec: StudySpec) -> None:
    if spec.recipe.augment:
        raise ConfigError("cache_teacher_logits: random crop/flip gives the teacher new inputs "
                          "every epoch; set recipe.augment = false (--no-augment) or turn the "
                          "cache off")  # fmt: skip
    for name in spec.methods:
        if name not in cacheable_methods():
            raise ConfigError(f"cache_teacher_logits: method {name!r} queries the teacher on "
                              f"mixed or augmented inputs that no cache holds; the cache works "
                              f"with {', '.join(cacheable_methods())}")  # fmt: skip


def validate_spec(spec: StudySpec) -> None:
    """Names against the registries; raises ConfigError. Runs before data, teacher or Ray."""
    _check_name("dataset", spec.dataset, DATASETS)
    _check_name("teacher", spec.teacher, MODELS)
    _check_name("student", spec.student, MODELS)
    for method in spec.methods:
        _check_name("methods", method, METHODS)
    for i, point in enumerate(spec.grid):
        try:
            TrialConfig.from_dict(point, method_defaults())
        except ConfigError as error:
            raise ConfigError(f"grid[{i}]: {error}") from None
    for metric, _ in spec.objectives:
        _check_name("objectives", metric, objective_names())
    if spec.cache_teacher_logits:
        _check_teacher_cache(spec)
    searched = {name for method in spec.methods for name in space_params(method)}
    for field, names in (("search", spec.search), ("fixed", spec.fixed)):
        for name in names:
            if name not in searched:
                raise ConfigError(
                    f"{field}.{name}: no method in {list(spec.methods)} has this "
                    f"hyperparameter; choose among {sorted(searched)}"
                )
    if spec.gpus_per_trial > 0 and not _on_cluster() and not torch.cuda.is_available():
        raise ConfigError(
            f"gpus_per_trial: {spec.gpus_per_trial} asked, but this machine has no "
            "CUDA GPU; use --gpus-per-trial 0 or run on a GPU cluster"
        )


def environment_tags() -> dict[str, str]:
    """Library versions and the git commit, so every run says what produced it."""
    tags = {
        f"version.{p}": metadata.version(p) for p in ("kdtune", "torch", "ray", "optuna", "mlflow")
    }
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except OSError:
        commit = ""
    tags["git_commit"] = commit or "unknown"
    return tags


def _init_ray(gpus_per_trial: float, log: Callable[[str], None]) -> None:
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


def _on_study_device(
    spec: StudySpec, device: str, work: Callable[..., _T], log: Callable[[str], None]
) -> Callable[..., _T]:
    """`work` (teacher training, teacher logits; each takes `device` and `log`) here, or, for a
    GPU study, as a Ray task on a GPU worker: a cluster's head node has no GPU, and a CIFAR
    teacher would take days on its CPUs. A remote task cannot call back into this process's
    `log`, so there it prints."""
    if spec.gpus_per_trial == 0:
        return functools.partial(work, device=device, log=log)
    import ray

    remote = ray.remote(num_cpus=1, num_gpus=1)(work)

    def run(*args: Any, **kwargs: Any) -> _T:
        log(f"{work.__name__}: running on a GPU worker ...")
        return ray.get(remote.remote(*args, **kwargs, log=print))

    return run


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".kdtune_write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"storage_path: cannot write to {str(folder)!r} ({error.strerror}); "
                          "choose a writable folder with --storage") from None  # fmt: skip


def _tuner(
    name: str,
    trainable: Any,
    tune_config: tune.TuneConfig,
    callback: TrackingCallback,
    storage: StudyStorage,
    *,
    resume: bool,
    max_failures: int,
    log: Callable[[str], None],
) -> tune.Tuner:
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


def _tune_config(spec: StudySpec) -> tune.TuneConfig:
    return tune.TuneConfig(
        search_alg=make_searcher(spec),
        scheduler=make_scheduler(spec),
        num_samples=spec.trial_count,
        max_concurrent_trials=spec.max_concurrent_trials,
        reuse_actors=True,
    )


def _rows(grid: Any, run_ids: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for result in grid:
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        metrics = {k: v for k, v in result.metrics.items() if k != EPOCH_HISTORY}
        rows.append(
            {
                **result.config,
                **metrics,
                "trial_id": trial_id,
                "status": "ERROR" if result.error else "TERMINATED",
                "error": failure_reason(result.error) if result.error else None,
                "mlflow_run_id": run_ids.get(trial_id),
            }
        )
    return rows


def _mark_front(rows: list[dict[str, Any]], spec: StudySpec) -> np.ndarray:
    names = [metric for metric, _ in spec.objectives]
    points = np.array(
        [
            [row.get(n, np.nan) if row["status"] == "TERMINATED" else np.nan for n in names]
            for row in rows
        ],
        dtype=float,
    )
    on_front = pareto_front(points.reshape(len(rows), len(names)), [m for _, m in spec.objectives])
    for row, flag in zip(rows, on_front):
        row["pareto"] = bool(flag)
    return points


def _post_process(
    spec: StudySpec, grid: Any, tracker: StudyTracker, storage: StudyStorage
) -> tuple[pa.Table, pa.Table]:
    study_dir = storage.local_dir
    rows = _rows(grid, tracker.trial_runs())
    points = _mark_front(rows, spec)
    table = results.to_table(rows)
    front = table.filter(pc.equal(table["pareto"], True))
    results.write_table(table, study_dir / "results.parquet")
    results.write_table(front, study_dir / "pareto.parquet")
    tracker.tag_pareto({r["mlflow_run_id"]: r["pareto"] for r in rows if r["mlflow_run_id"]})
    artifacts = [study_dir / "results.parquet", study_dir / "pareto.parquet"]
    atomic.write_text(
        study_dir / "pareto.txt", results.format_table(front, summary_columns(spec.methods)) + "\n"
    )
    artifacts.append(study_dir / "pareto.txt")
    finished = [r for r in rows if r["status"] == "TERMINATED"]
    if len(spec.objectives) == 2 and finished:
        (x_name, x_mode), (y_name, y_mode) = spec.objectives
        artifacts.append(
            plots.pareto_scatter(
                points[:, 0],
                points[:, 1],
                [r["pareto"] for r in rows],
                [r["method"] for r in rows],
                x_label=x_name,
                y_label=y_name,
                path=study_dir / "pareto.png",
                title=f"{spec.name}: {x_name} ({x_mode}) vs {y_name} ({y_mode})",
            )
        )
        worst = [
            0.0 if x_mode == "max" else np.nanmax(points[:, 0]) * 1.1,
            0.0 if y_mode == "max" else np.nanmax(points[:, 1]) * 1.1,
        ]
        tracker.log_study_metrics({"hypervolume": hypervolume_2d(points, [x_mode, y_mode], worst)})
    with_t = [r for r in finished if "temperature" in r and "test_acc" in r]
    if with_t:
        artifacts.append(
            plots.temperature_tradeoff(
                [r["temperature"] for r in with_t],
                {k: [r[k] for r in with_t] for k in ("test_acc", "test_ece", "test_ece_ts")},
                [r["method"] for r in with_t],
                path=study_dir / "temperature_tradeoff.png",
            )
        )
    tracker.log_study_artifacts(artifacts)
    storage.publish(*artifacts)
    tracker.log_study_metrics(
        {
            "num_trials": len(rows),
            "num_finished": len(finished),
            "pareto_size": sum(r["pareto"] for r in rows),
        }
    )
    return table, front


def grid_summary(spec: StudySpec, table: pa.Table, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std over the seeds of each configuration of a grid study, each labelled by
    what its point sets ("mixup_kd alpha=0.5") in a `config` entry."""
    keys = grid_keys(spec)
    summary = results.seed_summary(table.to_pylist(), keys, metrics)
    for entry in summary:
        entry["config"] = _config_label(entry, keys)
    return summary


def _config_label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    settings = [f"{k}={values[k]:.4g}" if isinstance(values[k], float) else f"{k}={values[k]}"
                for k in keys[1:] if values.get(k) is not None]  # fmt: skip
    return " ".join([str(values["method"]), *settings])


def _reseed_front(
    spec: StudySpec, result: StudyResult, *, resume: bool, tracking_uri: str | None,
    device: str, log: Callable[[str], None],
) -> list[dict[str, Any]]:  # fmt: skip
    """Re-run the search's Pareto configurations with `spec.reseed` (a grid study named
    NAME-reseed) and mark the front of their seed means; the search's own values stand beside
    them as `search_{objective}`, which shows how much the selection flattered them."""
    chosen = result.front.to_pylist()
    if not chosen:
        log("reseed: the front is empty (no finished trial); nothing to re-run")
        return []
    points = tuple({"method": row["method"], **{k: row[k] for k in space_params(row["method"])
                                                if row.get(k) is not None}}
                   for row in chosen)  # fmt: skip
    again = dataclasses.replace(spec, name=f"{spec.name}-reseed", grid=points,
                                seeds=spec.reseed, reseed=(), search={})  # fmt: skip
    log(f"\nreseed: {len(points)} Pareto configurations x seeds {list(spec.reseed)}")
    second = run_study(again, resume=resume, tracking_uri=tracking_uri, device=device, log=log)
    objectives = [m for m, _ in spec.objectives]
    metrics = list(dict.fromkeys([*objectives, "test_acc", "test_ece", "test_nll", "test_ece_ts"]))
    summary = grid_summary(again, second.table, metrics)
    means = np.array([[e[f"{m}_mean"] for m in objectives] for e in summary], dtype=float)
    on_front = pareto_front(means.reshape(len(summary), len(objectives)),
                            [mode for _, mode in spec.objectives])  # fmt: skip
    searched = {_config_label(row, grid_keys(again)): row for row in chosen}
    for entry, flag in zip(summary, on_front):
        entry["front"] = bool(flag)
        entry.update({f"search_{m}": searched.get(entry["config"], {}).get(m) for m in objectives})
    shown = [f"search_{m}" for m in objectives]
    log(results.format_summary(
        summary, ["config", "front", *shown], metrics,
        title=f"\nSeed-averaged front (seeds {list(spec.reseed)}; search_*: the search's own "
              f"seed {spec.seed}):"))  # fmt: skip
    folder = result.study_dir
    results.write_table(results.summary_table(summary), folder / "front_seeds.parquet")
    files = [folder / "front_seeds.parquet"]
    if len(objectives) == 2:
        files.append(plots.labelled_scatter(
            means[:, 0], means[:, 1], [e["config"] for e in summary],
            x_err=[e[f"{objectives[0]}_std"] or 0.0 for e in summary],
            y_err=[e[f"{objectives[1]}_std"] or 0.0 for e in summary],
            highlight=on_front, x_label=objectives[0], y_label=objectives[1],
            path=folder / "front_seeds.png",
            title=f"{spec.name}: front of the means over seeds {list(spec.reseed)}"))  # fmt: skip
    result.publish(files, {"seed_front_size": float(on_front.sum())})
    return summary


def study_teacher(spec: StudySpec, device: str = "cpu") -> tuple[DatasetBundle, torch.nn.Module]:
    """The study's data and teacher model (from the study's teacher cache, trained there if
    missing), for diagnostics that need the teacher itself, such as T.stddev."""
    data = load_dataset(spec.dataset, seed=spec.seed, root=spec.data_root, download=spec.download)
    teacher = get_teacher(data, spec.teacher, spec.teacher_recipe, seed=spec.seed,
                          cache_dir=StudyStorage.of(spec.storage_path, spec.name).teacher_cache,
                          log=lambda _: None)  # fmt: skip
    model = teacher.build(data.num_classes, data.in_shape, resolve_device(device))
    return data.to(resolve_device(device)), model


@dataclass(frozen=True)
class _OpenStudy:
    storage: StudyStorage
    tracker: StudyTracker
    parent_id: str
    tags: dict[str, str]
    resumed: bool  # the parent run existed before (a --resume that found it)


def _open_study(
    name: str, storage: StudyStorage, params: Mapping[str, Any], *, resume: bool,
    tracking_uri: str | None, log: Callable[[str], None],
) -> _OpenStudy:  # fmt: skip
    """The study's MLflow parent run, re-opened on resume (its id is kept beside the results)."""
    tracker = StudyTracker(name, tracking_uri)
    saved_parent = storage.read_text(PARENT_RUN_FILE) if resume else None
    previous = saved_parent.strip() if saved_parent else None
    tags = environment_tags()
    parent_id = tracker.start_study(name, params, tags, resume_run_id=previous)
    atomic.write_text(storage.local_dir / PARENT_RUN_FILE, parent_id)
    storage.publish(storage.local_dir / PARENT_RUN_FILE)
    log(f"mlflow: parent run {parent_id} in experiment {name!r} at {tracker.tracking_uri}")
    return _OpenStudy(storage, tracker, parent_id, tags, previous is not None)


def _fit_trials(
    study: _OpenStudy, name: str, trainable: Any, tune_config: tune.TuneConfig,
    objectives: Sequence[str], *, resume: bool, max_failures: int, log: Callable[[str], None],
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


def _closing_lines(study_dir: Path, tracking_uri: str) -> str:
    return (f"\nresults: {study_dir / 'results.parquet'}\nmlflow: run `kdtune ui` in {Path.cwd()} "
            f"(tracking URI {tracking_uri})")  # fmt: skip


def run_study(
    spec: StudySpec,
    *,
    resume: bool = False,
    tracking_uri: str | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> StudyResult:
    validate_spec(spec)
    data = load_dataset(spec.dataset, seed=spec.seed, root=spec.data_root, download=spec.download)
    storage = StudyStorage.of(spec.storage_path, spec.name)
    study_dir = storage.local_dir
    _check_writable(study_dir)
    log(
        f"data: {spec.dataset} train/val/test = "
        f"{len(data.train)}/{len(data.val)}/{len(data.test)}, "
        f"{data.num_classes} classes, shape {data.in_shape}"
    )
    _init_ray(spec.gpus_per_trial, log)
    teacher = None
    if any(METHODS[m].uses_teacher for m in spec.methods):
        train = _on_study_device(spec, device, train_teacher, log)
        teacher = get_teacher(data, spec.teacher, spec.teacher_recipe, seed=spec.seed,
                              cache_dir=storage.teacher_cache, log=log, train=train)  # fmt: skip
    teacher_logits = None
    if teacher is not None and spec.cache_teacher_logits:
        compute = _on_study_device(spec, device, train_logits, log)
        teacher_logits = get_train_logits(teacher, data, log=log, compute=compute)

    study = _open_study(spec.name, storage, dataclasses.asdict(spec), resume=resume,
                        tracking_uri=tracking_uri, log=log)  # fmt: skip
    if teacher is not None and not study.resumed:
        study.tracker.log_study_metrics(teacher.metrics)
        study.tracker.log_figure(
            study.parent_id,
            "reliability_teacher.png",
            lambda path: plots.reliability_diagram(
                teacher.reliability, path=path, title=f"teacher {spec.teacher}, test split"
            ),
        )

    context = TrialContext(
        data=data,
        teacher=teacher,
        teacher_logits=teacher_logits,
        student_model=spec.student,
        # "auto": the GPU Ray assigned when CUDA sees it (a logical GPU in tests falls back to CPU)
        device="auto" if spec.gpus_per_trial > 0 else "cpu",
        threads=max(1, int(spec.cpus_per_trial)),
        checkpoint_interval_s=spec.checkpoint_interval_s,
        report_interval_s=spec.report_interval_s,
    )
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, context=context),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    log(f"study: {spec.trial_count} trials, {spec.max_concurrent_trials} at a time")
    table, front = _fit_trials(
        study, spec.name, trainable, _tune_config(spec), [m for m, _ in spec.objectives],
        resume=resume, max_failures=spec.max_failures, log=log,
        post_process=lambda grid: _post_process(spec, grid, study.tracker, storage),
    )  # fmt: skip
    columns = summary_columns(spec.methods)
    log(results.format_table(table, columns, title=f"\nAll trials ({table.num_rows}):"))
    objectives = [m for m, _ in spec.objectives]
    log(results.format_table(front, columns, title=f"\nPareto front over {objectives}:"))
    log(_closing_lines(study_dir, study.tracker.tracking_uri))
    result = StudyResult(table, front, study_dir, study.parent_id,
                         teacher.metrics if teacher else {}, storage,
                         study.tracker.tracking_uri)  # fmt: skip
    if spec.reseed:
        seed_front = _reseed_front(spec, result, resume=resume, tracking_uri=tracking_uri,
                                   device=device, log=log)  # fmt: skip
        result = dataclasses.replace(result, seed_front=seed_front)
    return result


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
    log: Callable[[str], None] = print,
) -> StudyResult:
    """Any Ray Tune function trainable over an explicit list of configs, with run_study's
    handling of Ray, MLflow (parent run with `params`, a child run per trial), resume and the
    Parquet table; there is no teacher, search or Pareto front."""
    storage = StudyStorage.of(storage_path, name)
    _check_writable(storage.local_dir)
    _init_ray(0, log)
    study = _open_study(name, storage, params, resume=resume, tracking_uri=tracking_uri, log=log)
    tune_config = tune.TuneConfig(
        search_alg=points_searcher([dict(p) for p in points]),
        num_samples=len(points),
        max_concurrent_trials=max_concurrent_trials,
        reuse_actors=True,
    )

    def post_process(grid: Any) -> pa.Table:
        table = results.to_table(_rows(grid, study.tracker.trial_runs()))
        results.write_table(table, storage.local_dir / "results.parquet")
        study.tracker.log_study_artifacts([storage.local_dir / "results.parquet"])
        storage.publish(storage.local_dir / "results.parquet")
        return table

    log(f"study: {len(points)} trials, {max_concurrent_trials} at a time")
    trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial})
    table = _fit_trials(study, name, trainable, tune_config, progress_metrics, resume=resume,
                        max_failures=2, log=log, post_process=post_process)  # fmt: skip
    log(_closing_lines(storage.local_dir, study.tracker.tracking_uri))
    return StudyResult(table, table.slice(0, 0), storage.local_dir, study.parent_id, {}, storage,
                       study.tracker.tracking_uri)  # fmt: skip
