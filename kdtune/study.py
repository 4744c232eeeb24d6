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
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from ray import tune

from kdtune import atomic, plots, results
from kdtune.callback import TrackingCallback, failure_reason
from kdtune.config import ConfigError, StudySpec
from kdtune.data import DATASETS, load_dataset
from kdtune.methods import METHODS
from kdtune.metrics import SPLIT_METRICS
from kdtune.models import MODELS
from kdtune.pareto import hypervolume_2d, pareto_front
from kdtune.search import make_scheduler, make_searcher, space_params
from kdtune.storage import StudyStorage
from kdtune.teacher import get_teacher, train_teacher
from kdtune.tracking import StudyTracker
from kdtune.trainable import TrialContext, tune_trainable

PARENT_RUN_FILE = "mlflow_parent_run_id"
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


def validate_spec(spec: StudySpec) -> None:
    """Names against the registries; raises ConfigError. Runs before data, teacher or Ray."""
    _check_name("dataset", spec.dataset, DATASETS)
    _check_name("teacher", spec.teacher, MODELS)
    _check_name("student", spec.student, MODELS)
    for method in spec.methods:
        _check_name("methods", method, METHODS)
    for metric, _ in spec.objectives:
        _check_name("objectives", metric, objective_names())
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


def _init_ray(spec: StudySpec, log: Callable[[str], None]) -> None:
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        else:
            # A local Ray binds to loopback only (see kdtune/__init__.py) and starts no dashboard.
            ray.init(include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    log(f"ray: {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs")
    if spec.gpus_per_trial > 0 and not resources.get("GPU"):
        log("ray: no GPU in the cluster yet; trials wait until the autoscaler adds GPU workers")


def _teacher_trainer(
    spec: StudySpec, device: str, log: Callable[[str], None]
) -> Callable[..., Any]:
    """Train the teacher here, or, for a GPU study, as a Ray task on a GPU worker: a cluster's
    head node has no GPU, and a CIFAR teacher would take days on its CPUs."""
    if spec.gpus_per_trial == 0:
        return functools.partial(train_teacher, device=device, log=log)
    import ray

    remote_train = ray.remote(num_cpus=1, num_gpus=1)(train_teacher)

    def train(data: Any, model_name: str, recipe: Any, *, seed: int) -> Any:
        log(f"teacher: training {model_name} for {recipe.epochs} epochs on a GPU worker ...")
        return ray.get(remote_train.remote(data, model_name, recipe, seed=seed, log=print))

    return train


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
    spec: StudySpec,
    trainable: Any,
    callback: TrackingCallback,
    storage: StudyStorage,
    resume: bool,
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
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(spec),
            scheduler=make_scheduler(spec),
            num_samples=spec.num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=storage.root,
            callbacks=[callback],
            verbose=0,  # kdtune prints one line per finished trial instead
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def _rows(grid: Any, run_ids: dict[str, str]) -> list[dict[str, Any]]:
    rows = []
    for result in grid:
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        rows.append(
            {
                **result.config,
                **result.metrics,
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
    _init_ray(spec, log)
    teacher = None
    if any(METHODS[m].uses_teacher for m in spec.methods):
        teacher = get_teacher(data, spec.teacher, spec.teacher_recipe, seed=spec.seed,
                              cache_dir=storage.teacher_cache, log=log,
                              train=_teacher_trainer(spec, device, log))  # fmt: skip

    tracker = StudyTracker(spec.name, tracking_uri)
    saved_parent = storage.read_text(PARENT_RUN_FILE) if resume else None
    previous = saved_parent.strip() if saved_parent else None
    tags = environment_tags()
    parent_id = tracker.start_study(
        spec.name, dataclasses.asdict(spec), tags, resume_run_id=previous
    )
    atomic.write_text(study_dir / PARENT_RUN_FILE, parent_id)
    storage.publish(study_dir / PARENT_RUN_FILE)
    if teacher is not None and previous is None:
        tracker.log_study_metrics(teacher.metrics)
        tracker.log_figure(
            parent_id,
            "reliability_teacher.png",
            lambda path: plots.reliability_diagram(
                teacher.reliability, path=path, title=f"teacher {spec.teacher}, test split"
            ),
        )
    log(f"mlflow: parent run {parent_id} in experiment {spec.name!r} at {tracker.tracking_uri}")

    context = TrialContext(
        data=data,
        teacher=teacher,
        student_model=spec.student,
        # "auto": the GPU Ray assigned when CUDA sees it (a logical GPU in tests falls back to CPU)
        device="auto" if spec.gpus_per_trial > 0 else "cpu",
        threads=max(1, int(spec.cpus_per_trial)),
        checkpoint_interval_s=spec.checkpoint_interval_s,
    )
    trainable = tune.with_resources(
        tune.with_parameters(tune_trainable, context=context),
        {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial},
    )
    callback = TrackingCallback(spec.name, tracker.tracking_uri, parent_id, tags, spec)
    status = "FAILED"
    try:
        grid = _tuner(spec, trainable, callback, storage, resume, log).fit()
        table, front = _post_process(spec, grid, tracker, storage)
        status = "FINISHED"
    finally:
        tracker.end_study(status)
    log(
        results.format_table(
            table, summary_columns(spec.methods), title=f"\nAll trials ({table.num_rows}):"
        )
    )
    log(
        results.format_table(
            front,
            summary_columns(spec.methods),
            title=f"\nPareto front over {[m for m, _ in spec.objectives]}:",
        )
    )
    log(
        f"\nresults: {study_dir / 'results.parquet'}\nmlflow: run `mlflow ui` in {Path.cwd()} "
        f"(tracking URI {tracker.tracking_uri})"
    )
    return StudyResult(table, front, study_dir, parent_id, teacher.metrics if teacher else {})
