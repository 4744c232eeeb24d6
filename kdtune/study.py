"""`run_study(spec)`: a KD study from its spec to its record. Teacher once, trials on Ray Tune,
Optuna search or grid, MLflow.

Flow: validate the spec (before Ray starts) -> load data -> get or train the teacher -> open the
MLflow parent run -> the trials (kdtune.runner) -> results, front, figures (kdtune.outcome) ->
with `reseed`, the seed check of the front (kdtune.reseed).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from kdtune import plots
from kdtune.benchmark import pair_defaults, with_pair_defaults
from kdtune.blackbox import Blackbox
from kdtune.callback import FINISHED_STATES
from kdtune.cluster import (
    check_local_resources,
    check_resources,
    init_ray,
    on_cluster,
    on_study_device,
    ship_by_value,
)
from kdtune.config import ConfigError, Log, StudySpec, resume_changes, spec_record
from kdtune.data import DATASETS, EMBEDDED, DatasetBundle, check_dataset_files, load_dataset
from kdtune.engine import resolve_device
from kdtune.hparams import RAMP_EPOCHS, Declarations, HParam, by_name, with_role
from kdtune.importance import (
    load_study,
    search_ended,
)
from kdtune.methods import METHODS, cacheable_methods
from kdtune.metrics import SPLIT_METRICS
from kdtune.models import MODELS, read_state_dict
from kdtune.outcome import (
    Outcome,
    config_label,
    describe_search,
    early_stopping_report,
    format_tables,
    importance_report,
    write_outcome,
)
from kdtune.reseed import rerun_front
from kdtune.runner import (
    ParentRun,
    StudyResult,
    can_resume,
    check_resumable,
    fit_trials,
    open_parent_run,
    prepare_storage,
    trials_config,
)
from kdtune.scheduler import SCHEDULER_STATE, check_state_file
from kdtune.search import (
    check_optuna_storage,
    fixed_values,
    grace_period,
    grid_points,
    label_keys,
    make_scheduler,
    resolve,
    rungs,
    save_learning_curves,
    search_range,
    study_claim,
)
from kdtune.searchers import make_searcher, tell_optuna_of
from kdtune.simulate import SIMULATED_CPUS, SimulatedContext, simulated_trainable
from kdtune.storage import (
    RUNGS_FILE,
    TRIAL_LINKS,
    StudyStorage,
    TrialLinks,
    for_this_launch,
    keep_study_file,
    study_file,
    study_identity,
    study_lock,
)
from kdtune.teacher import Teacher, get_teacher, get_train_logits, train_logits, train_teacher
from kdtune.tracking import TRIAL_TAG, is_server, run_route, ui_address, view_link
from kdtune.trainable import BEST_ON_TEST, TrialContext, tune_trainable


def objective_names() -> list[str]:
    return [f"{split}_{name}{suffix}" for split in ("val", "test") for name in SPLIT_METRICS
            for suffix in ("", "_ts")] + [BEST_ON_TEST]  # fmt: skip


def study_data(spec: StudySpec) -> DatasetBundle:
    """The study's dataset, split as its protocol says."""
    data = load_dataset(spec.dataset, seed=spec.seed, root=spec.data_root, download=spec.download)
    return data.without_holdout() if spec.protocol == "cifar_benchmark" else data


def study_declarations(spec: StudySpec) -> dict[str, tuple[HParam, ...]]:
    """The hyperparameter declarations of the study's methods."""
    return {name: METHODS[name].hparams for name in spec.methods}


def _check_name(field: str, value: str, registry: Any) -> None:
    if value not in registry:
        raise ConfigError(f"{field}: unknown {value!r}; choose one of {sorted(registry)}")


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


def _declared(field: str, key: str, declarations: Declarations) -> list[HParam]:
    """The declarations a `fixed`/`search` key ("name" or "method.name") refers to."""
    method, _, name = key.rpartition(".")
    found = [h for m, h in by_name(declarations).get(name, []) if method in ("", m)]
    if not found:
        names = sorted(by_name(declarations))
        raise ConfigError(f"{field}.{key}: no method in {list(declarations)} has this "
                          f"hyperparameter; choose among {names}")  # fmt: skip
    return found


def _check_hparam_values(spec: StudySpec, declarations: Declarations) -> None:
    """`fixed` values and `search` ranges against the declarations of the names they set."""
    for key, value in spec.fixed.items():
        for hparam in _declared("fixed", key, declarations):
            hparam.parse(value, f"fixed.{key}")
    for key, (low, high) in spec.search.items():
        for hparam in _declared("search", key, declarations):
            if hparam.kind not in (float, int):
                raise ConfigError(f"search.{key}: {hparam.name} is {hparam.valid_text()}; "
                                  "set it with `fixed`, or list the values in `grid`")  # fmt: skip
            hparam.parse(low, f"search.{key}"), hparam.parse(high, f"search.{key}")
            if hparam.log and low <= 0 < high:
                raise ConfigError(f"search.{key}: {hparam.name} is searched on a log scale; "
                                  f"give low > 0, got {low!r}")  # fmt: skip


def validate_spec(spec: StudySpec) -> None:
    """Names against the registries, values against the declarations; raises ConfigError.
    Runs before data, teacher or Ray."""
    for field, value, registry in (("dataset", spec.dataset, DATASETS),
                                   ("teacher", spec.teacher, MODELS),
                                   ("student", spec.student, MODELS)):  # fmt: skip
        _check_name(field, value, registry)
    for method in spec.methods:
        _check_name("methods", method, METHODS)
    declarations = study_declarations(spec)
    for i, point in enumerate(spec.grid):
        try:
            resolve(point, declarations)
        except ConfigError as error:
            raise ConfigError(f"grid[{i}]: {error}") from None
    for metric, _ in spec.objectives:
        _check_name("objectives", metric, objective_names())
        per_epoch = metric.startswith("val_") and not metric.endswith("_ts")
        if spec.early_stopping and not per_epoch:
            raise ConfigError(f"objectives: {metric} is only known at a trial's end, but MO-ASHA "
                              "judges trials at intermediate epochs on val_* metrics; use "
                              "--scheduler fifo, or val_* objectives")  # fmt: skip
    if spec.cache_teacher_logits:
        _check_teacher_cache(spec)
    if spec.teacher_checkpoint:
        if not any(METHODS[m].uses_teacher for m in spec.methods):
            raise ConfigError("teacher_checkpoint: no method of this study uses a teacher; "
                              "drop it, or add a distillation method")  # fmt: skip
        read_state_dict(spec.teacher_checkpoint)  # whether it fits needs the data: see _teacher
    _check_hparam_values(spec, declarations)
    if spec.simulate:
        simulated_blackbox(spec)
        return  # a simulation touches no GPU: the GPUs it asks for are declared to Ray
    if spec.gpus_per_trial > 0 and not on_cluster() and not torch.cuda.is_available():
        raise ConfigError(
            f"gpus_per_trial: {spec.gpus_per_trial} asked, but this machine has no "
            "CUDA GPU; use --gpus-per-trial 0 or run on a GPU cluster"
        )


def simulated_blackbox(spec: StudySpec) -> Blackbox:
    """The blackbox `spec.simulate` names, checked to answer for every trial the study can
    draw: its methods, its epochs, its objectives, and each method's hyperparameters (searched
    ranges inside the measured ones, fixed values at those the blackbox held); else one
    ConfigError naming `simulate`."""
    path = Path(spec.simulate)
    if not path.is_file():
        raise ConfigError(f"simulate: no file {spec.simulate!r}; give a blackbox built by "
                          "`python -m bench.blackbox`, or --simulate alone for the shipped one")
    try:
        box = Blackbox.load(path)
    except ConfigError as error:
        raise ConfigError(f"simulate: {error}") from None
    except Exception as error:  # not Parquet, or damaged
        raise ConfigError(f"simulate: cannot read {spec.simulate!r} as a blackbox "
                          f"({type(error).__name__}); give a file built by bench/blackbox.py"
                          ) from None
    missing = [m for m in spec.methods if m not in box.methods]
    if missing:
        measured = ", ".join(box.methods) or "no complete run"
        raise ConfigError(f"simulate: {spec.simulate} measured {measured}, not "
                          f"{', '.join(missing)}; choose --methods among them")  # fmt: skip
    if spec.recipe.epochs != box.recipe["epochs"]:
        raise ConfigError(f"simulate: {spec.simulate} holds {box.recipe['epochs']}-epoch "
                          f"trainings, the study trains {spec.recipe.epochs} (recipe.epochs); "
                          f"use --epochs {box.recipe['epochs']}")  # fmt: skip
    for metric, _ in spec.objectives:
        if metric not in box.metrics:
            raise ConfigError(f"simulate: {spec.simulate} has no {metric} (objectives); choose "
                              "objectives among its val_* and test_* metrics")  # fmt: skip
    declarations = study_declarations(spec)
    try:
        for point in _corners(spec) + grid_points(spec, declarations):
            names = {h.name for h in declarations[str(point["method"])]}
            box.true_curve(str(point["method"]),
                           {k: v for k, v in point.items() if k in names})  # fmt: skip
    except ConfigError as error:
        raise ConfigError(f"simulate: {spec.simulate} cannot answer for this study: {error}; "
                          "search and fix only what it measured") from None  # fmt: skip
    return box


def _corners(spec: StudySpec) -> list[dict[str, Any]]:
    """For each method of a search, the ends of its searched ranges (each in turn, the others at
    their fixed or default values): the extremes of what the search can draw."""
    if spec.grid:
        return []
    corners = []
    for method, hparams in study_declarations(spec).items():
        base = {"method": method, **{h.name: h.default for h in hparams},
                **fixed_values(spec, method, hparams)}  # fmt: skip
        corners.append(base)
        for hparam in hparams:
            bounds = search_range(spec, method, hparam)
            for value in bounds or ():
                corners.append({**base, hparam.name: value})
    return corners


def study_teacher(spec: StudySpec, device: str = "cpu") -> tuple[DatasetBundle, torch.nn.Module]:
    """The study's data and teacher model (from the study's teacher cache, trained there if
    missing), for diagnostics that need the teacher itself, such as T.stddev."""
    data = study_data(spec)
    teacher = get_teacher(data, spec.teacher, spec.teacher_recipe, seed=spec.seed,
                          cache_dir=StudyStorage.of(spec.storage_path, spec.name).teacher_cache,
                          log=lambda _: None, checkpoint=spec.teacher_checkpoint)  # fmt: skip
    model = teacher.build(data.num_classes, data.in_shape, resolve_device(device))
    return data.to(resolve_device(device)), model


def _teacher(spec: StudySpec, data: DatasetBundle, storage: StudyStorage, device: str,
             log: Log) -> tuple[Teacher | None, torch.Tensor | None]:  # fmt: skip
    """The study's teacher (cached or trained) and, if asked, its cached training logits."""
    if not any(METHODS[m].uses_teacher for m in spec.methods):
        return None, None
    train = on_study_device(spec.gpus_per_trial, device, train_teacher, log)
    teacher = get_teacher(data, spec.teacher, spec.teacher_recipe, seed=spec.seed,
                          cache_dir=storage.teacher_cache, log=log, train=train,
                          checkpoint=spec.teacher_checkpoint)  # fmt: skip
    if not spec.cache_teacher_logits:
        return teacher, None
    compute = on_study_device(spec.gpus_per_trial, device, train_logits, log)
    return teacher, get_train_logits(teacher, data, log=log, compute=compute)


def study_params(spec: StudySpec, storage: StudyStorage) -> dict[str, Any]:
    """The spec as the parent run's params, readable: lists comma-joined, objectives as
    METRIC:mode, grid points by what they set, the Optuna store a search uses; what does not
    apply left out (the data folder of an embedded dataset, a grid's Optuna store, empty
    lists)."""
    values = dataclasses.asdict(spec)
    values["optuna_storage"] = "" if spec.grid else optuna_url(spec, storage)
    values["objectives"] = [f"{metric}:{mode}" for metric, mode in spec.objectives]
    values["grid"] = [config_label(point, list(point)) for point in spec.grid]
    if spec.dataset in EMBEDDED:
        del values["data_root"], values["download"]
    if spec.teacher_checkpoint:
        del values["teacher_recipe"]
    if not spec.simulate:
        del values["simulate"], values["simulate_epoch_s"]
    return {key: value for key, value in values.items() if value not in ((), [], {}, "")}


def _record_start(parent: ParentRun, spec: StudySpec, data: DatasetBundle,
                  teacher: Teacher | None) -> None:  # fmt: skip
    """What the parent run says from the start: the data as an MLflow dataset input, and the
    teacher's headline metrics (all of them in teacher.json) and reliability diagram."""
    splits = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    parent.tracker.log_dataset(data.name, data.fingerprint(), splits)
    if teacher is None:
        return
    parent.tracker.log_study_metrics({k: v for k, v in teacher.metrics.items()
                                     if k in ("teacher_test_acc", "teacher_test_ece")})  # fmt: skip
    summary = {"model": spec.teacher, "checkpoint": teacher.path,
               "source_checkpoint": spec.teacher_checkpoint or None,
               "source_sha256": teacher.checkpoint_sha256 or None, **teacher.metrics}
    parent.tracker.log_file(parent.run_id, "teacher.json",
                           lambda path: path.write_text(json.dumps(summary, indent=2)))
    parent.tracker.log_file(parent.run_id, "reliability_teacher.png",
                             lambda path: plots.reliability_diagram(
                                 teacher.reliability, path=path,
                                 title=f"teacher {spec.teacher}, test split"))  # fmt: skip


def _trainable(spec: StudySpec, data: DatasetBundle, teacher: Teacher | None,
               logits: torch.Tensor | None) -> Any:  # fmt: skip
    methods = {name: METHODS[name] for name in spec.methods}
    ship_by_value([method.step for method in methods.values()])
    context = TrialContext(
        data=data, teacher=teacher, teacher_logits=logits, student_model=spec.student,
        methods=methods,
        # "auto": the GPU Ray assigned when CUDA sees it (a logical GPU in tests falls back to CPU)
        device="auto" if spec.gpus_per_trial > 0 else "cpu", report_epochs=frozenset(rungs(spec)),
        threads=max(1, int(spec.cpus_per_trial)),
        checkpoint_interval_s=spec.checkpoint_interval_s,
        report_interval_s=spec.report_interval_s,
    )  # fmt: skip
    resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(tune_trainable, context=context), resources)


def _run_one(spec: StudySpec, *, resume: bool, tracking_uri: str | None, device: str,
             question: str, log: Log) -> StudyResult:  # fmt: skip
    """One study (a search or a grid), without the seed check: every check that the input
    allows (`_checked_start`) runs before data, teacher or Ray; the study folder is held until
    the end."""
    spec, storage, uri, study_id, resuming = _checked_start(spec, resume=resume,
                                                            tracking_uri=tracking_uri, log=log)
    with study_lock(storage.local_dir, spec.name):
        if not resuming:
            keep_study_file(storage, study_id, spec_record(spec))
        shared = {"resume": resume, "resuming": resuming, "tracking_uri": uri,
                  "study_id": study_id, "question": question, "log": log}  # fmt: skip
        if spec.simulate:
            return _simulated_study(spec, storage, **shared)
        return _trained_study(spec, storage, device=device, **shared)


def _checked_start(spec: StudySpec, *, resume: bool, tracking_uri: str | None,
                   log: Log) -> tuple[StudySpec, StudyStorage, str, str, bool]:  # fmt: skip
    """The spec (with its teacher-student pair's defaults, and what a resume keeps of the first
    launch), the checked study folder and MLflow store, the study's id, and whether Tune resumes
    a saved state: spec, dataset files, stores, folder, resume and the machine's resources are
    checked before anything slow starts."""
    validate_spec(spec)
    if found := pair_defaults(spec):
        log(f"defaults of {spec.teacher} -> {spec.student} (official configs): "
            + ", ".join(f"{k} {v:g}" for k, v in found.items()))
        spec = with_pair_defaults(spec)
    if not spec.simulate:  # a simulation loads no data and asks the machine for no GPU
        check_dataset_files(spec.dataset, spec.data_root, spec.download)
    storage, uri = prepare_storage(spec.storage_path, spec.name, tracking_uri, resume, log)
    if not spec.simulate:
        check_local_resources(spec.cpus_per_trial, spec.gpus_per_trial)
    saved = study_file(storage)
    if resume:
        changes = resume_changes(saved["spec"], spec) if saved else ([], {})
        check_resumable(storage, saved, changes, log)
        spec = dataclasses.replace(spec, **changes[1])
    if resume and spec.early_stopping:
        check_state_file(storage.local_dir / SCHEDULER_STATE)
    study_id = study_identity(saved, resume)
    resuming = resume and can_resume(storage)  # else it starts, with what ran before replaced
    if not spec.grid:
        check_optuna_storage(optuna_url(spec, storage))
        study_claim(spec, optuna_url(spec, storage), study_id, resume=resuming)
    return spec, storage, uri, study_id, resuming


def _trained_study(spec: StudySpec, storage: StudyStorage, *, resume: bool, resuming: bool,
                   tracking_uri: str, study_id: str, question: str, log: Log,
                   device: str) -> StudyResult:  # fmt: skip
    """A study of real trainings: the data, the teacher (trained or loaded here, or on a GPU
    worker), Ray, the parent run, then the trials."""
    data = study_data(spec)
    log(f"data: {spec.dataset} train/val/test = {len(data.train)}/{len(data.val)}/"
        f"{len(data.test)}, {data.num_classes} classes, shape {data.in_shape}")  # fmt: skip
    if not data.holdout:
        log("protocol: cifar_benchmark: trained on every training image, no validation "
            f"split; test_acc is the last epoch's, {BEST_ON_TEST} the best epoch's")
    teacher, logits = _teacher(spec, data, storage, device, log)
    init_ray(log)
    check_resources(spec.cpus_per_trial, spec.gpus_per_trial, log)
    params = study_params(spec, storage)
    if teacher is not None and teacher.checkpoint_sha256:
        params["teacher_checkpoint_sha256"] = teacher.checkpoint_sha256
    parent = open_parent_run(spec.name, storage, params, resume=resume, tracking_uri=tracking_uri,
                       log=log, tags=setup_tags(spec))  # fmt: skip
    if not parent.resumed:
        _record_start(parent, spec, data, teacher)
    return _fit_study(spec, parent, _trainable(spec, data, teacher, logits),
                      teacher.metrics if teacher else {}, resume=resuming,
                      study_id=study_id, question=question, log=log)  # fmt: skip


def _simulated_study(spec: StudySpec, storage: StudyStorage, *, resume: bool, resuming: bool,
                     tracking_uri: str, study_id: str, question: str,
                     log: Log) -> StudyResult:  # fmt: skip
    """The study on the blackbox `spec.simulate`: no data, no teacher, trials that replay its
    curves. A local Ray is started with the GPUs the study asks for declared (logical: Ray
    grants them, nothing uses them), so that `--gpus-per-trial 1 --max-concurrent-trials 64`
    runs here as on a 64-GPU cluster; the machine's own CUDA check is skipped on purpose
    (validate_spec, check_local_resources), Ray's (check_resources) still runs."""
    box = simulated_blackbox(spec)
    study = box.recipe.get("study", {})
    configs = sum(len(box.table(m).configs) for m in spec.methods)
    log(f"simulate: replaying {spec.simulate} ({configs} configurations of "
        f"{len(spec.methods)} methods, {study.get('dataset', '?')}, {study.get('student', '?')} "
        f"student); no training")  # fmt: skip
    if (spec.dataset, spec.teacher, spec.student) != tuple(study.get(k) for k in
                                                           ("dataset", "teacher", "student")):
        log(f"simulate: the study names {spec.dataset}, {spec.teacher} -> {spec.student}; the "
            "replayed curves are the blackbox's, only the set-up is the study's")
    started = ray.is_initialized()
    init_ray(log, gpus=spec.gpus_per_trial * spec.max_concurrent_trials)
    try:
        check_resources(SIMULATED_CPUS, spec.gpus_per_trial, log)
    except ConfigError as error:
        if not started:
            raise
        raise ConfigError(f"simulate: this process started Ray before the study, without the "
                          f"GPUs the simulation declares ({error}); run the study in a process "
                          "of its own (the study script), or ray.init(num_gpus=...) with "
                          "enough") from None  # fmt: skip
    parent = open_parent_run(spec.name, storage, study_params(spec, storage), resume=resume,
                             tracking_uri=tracking_uri, log=log, tags=setup_tags(spec))  # fmt: skip
    context = SimulatedContext(
        blackbox=box, declarations=study_declarations(spec), epoch_s=spec.simulate_epoch_s,
        checkpoint_interval_s=spec.checkpoint_interval_s,
        report_interval_s=spec.report_interval_s, report_epochs=frozenset(rungs(spec)),
    )  # fmt: skip
    trainable = tune.with_resources(tune.with_parameters(simulated_trainable, context=context),
                                    {"cpu": SIMULATED_CPUS, "gpu": spec.gpus_per_trial})
    return _fit_study(spec, parent, trainable, {}, resume=resuming, study_id=study_id,
                      question=question, log=log)  # fmt: skip


def setup_tags(spec: StudySpec) -> dict[str, str]:
    """What the study trains, as tags on its parent and every child run, which the runs table
    can show and filter by."""
    return {"dataset": spec.dataset, "teacher": spec.teacher, "student": spec.student}


def mlflow_links(parent: ParentRun) -> dict[str, str]:
    """Where the MLflow record of a search is, for its Optuna study: the store, the experiment,
    the parent run, the UI's route to the runs, and the search that finds the run of an Optuna
    trial (whose user attribute `tune_trial_id` fills it in)."""
    tracker = parent.tracker
    return {"mlflow_tracking_uri": tracker.tracking_uri,
            "mlflow_experiment_id": tracker.experiment_id, "mlflow_parent_run_id": parent.run_id,
            "mlflow_ui_route": view_link(tracker.experiment_id),
            "mlflow_run_of_a_trial": f"tags.`{TRIAL_TAG}` = '<tune_trial_id>'"}  # fmt: skip


def mlflow_note(parent: ParentRun) -> str:
    """The Optuna study's note: links to its MLflow record, which optuna-dashboard shows on the
    study's page."""
    tracker = parent.tracker
    address = ui_address(tracker.tracking_uri)
    served = ("" if is_server(tracker.tracking_uri) else
              f" (as `kdtune ui --tracking-uri {tracker.tracking_uri}` serves it)")  # fmt: skip
    return (f"**In MLflow**{served}: [every trial's run]({address}/"
            f"{view_link(tracker.experiment_id)}), [the study's run]({address}/"
            f"{run_route(tracker.experiment_id, parent.run_id)}) with its description and "
            "figures. Each trial's run: its user attribute `mlflow_run_url`; the runs name their "
            "Optuna trial back (tag `optuna_trial_number`). The learning curves on the study's "
            "page are kdtune's figure: optuna-dashboard draws its own for single-objective "
            "studies only.")


def optuna_url(spec: StudySpec, storage: StudyStorage) -> str:
    """Where the search keeps its Optuna study: --optuna-storage, else the study folder's."""
    return spec.optuna_storage or f"sqlite:///{storage.local_dir / 'optuna.db'}"


def _fit_study(spec: StudySpec, parent: ParentRun, trainable: Any,
               teacher_metrics: Mapping[str, float], *, resume: bool, study_id: str,
               question: str, log: Log) -> StudyResult:  # fmt: skip
    declarations = study_declarations(spec)
    url = optuna_url(spec, parent.storage)
    searcher = make_searcher(spec, declarations, url, resume, study_id)
    tell_optuna_of(searcher, mlflow_links(parent), mlflow_note(parent))
    address, tracker = ui_address(parent.tracker.tracking_uri), parent.tracker
    for_this_launch(TRIAL_LINKS, spec.name, None if spec.grid else TrialLinks(
        lambda run_id: f"{address}/{run_route(tracker.experiment_id, run_id)}"))
    tune_config = trials_config(spec.name, searcher, spec.most_trials,
                                spec.max_concurrent_trials, make_scheduler(spec))  # fmt: skip
    if spec.early_stopping:
        for_this_launch(RUNGS_FILE, spec.name, parent.storage.local_dir / SCHEDULER_STATE)
        log(f"study: MO-ASHA judges trials at epochs {rungs(spec)} and lets on the best "
            f"1/{spec.reduction_factor:g} at each" if rungs(spec) else "study: MO-ASHA has no "
            f"rung below epochs / reduction_factor = {spec.recipe.epochs / spec.reduction_factor:g}"
            f" (grace period {grace_period(spec):g}): every trial runs its whole budget")
    replicates = (f", then up to {spec.replicate_trials} more seeds of the front's "
                  f"configurations (up to {spec.front_seeds} seeds each)"
                  if spec.replicate_trials else "")  # fmt: skip
    log(f"study: {spec.trial_count} trials{replicates}, {spec.max_concurrent_trials} at a time")
    for note in warmup_notes(spec, declarations):
        log(note)
    objectives = [m for m, _ in spec.objectives]
    labels = label_keys(spec, declarations)

    def finish(trials: list[Any]) -> tuple[Outcome, list[Path]]:
        return _finish(spec, trials, parent, declarations, labels, url,
                       question=question, log=log)  # fmt: skip

    outcome, files = fit_trials(
        parent, spec.name, trainable, tune_config, objectives,
        resume=resume, max_failures=spec.max_failures, log=log, label_keys=labels,
        post_process=finish, search_ended=lambda: not spec.grid and search_ended(url, spec.name),
    )  # fmt: skip
    return StudyResult(outcome.table, outcome.front, parent.storage.local_dir, parent.run_id,
                       dict(teacher_metrics), parent.storage,
                       parent.tracker.tracking_uri, parent.tracker.experiment_id, files=files,
                       link=view_link(parent.tracker.experiment_id))  # fmt: skip


def _finish(spec: StudySpec, trials: list[Any], parent: ParentRun, declarations: Declarations,
            labels: Mapping[str, Sequence[str]], url: str, *, question: str,
            log: Log) -> tuple[Outcome, list[Path]]:  # fmt: skip
    """Everything the parent run holds at the end, before fit_trials marks it FINISHED (a driver
    killed in here leaves it RUNNING, and --resume writes it all again): the outcome, its
    tables printed, and after a whole search its reports, printed and in the description."""
    outcome = write_outcome(spec, trials, parent.tracker, parent.storage, declarations, labels,
                            question)  # fmt: skip
    log(format_tables(outcome.table, outcome.front, declarations,
                      front_title=f"Pareto front over {[m for m, _ in spec.objectives]}"))
    files = list(outcome.files)
    if spec.grid or len(trials) < spec.trial_count or any(
            t.status not in FINISHED_STATES for t in trials):  # fmt: skip
        return outcome, files  # an interrupted search: its importance comes with the rest
    searched, reports = load_study(url, spec.name), []

    def report(text: str) -> None:
        log(text)
        reports.append(text)

    front = {r["trial_id"] for r in outcome.table.to_pylist() if r["pareto"]}
    save_learning_curves(searched, spec.objectives[0][0], front)
    files += importance_report(spec, searched, parent.tracker, parent.storage, report,
                               outcome.seed_means)  # fmt: skip
    if spec.early_stopping:
        early_stopping_report(spec, outcome.table.to_pylist(), searched, parent.tracker, report)
    describe_search(parent.tracker, outcome, reports)
    return outcome, files


BENCHMARK_WARMUP_SHARE = 20 / 240  # DKD's warm-up in the CIFAR-100 benchmark's recipe


def warmup_notes(spec: StudySpec, declarations: Declarations) -> list[str]:
    """A line for each method whose distillation terms ramp up over a larger share of the
    training than the benchmark's (DKD's 20 of 240 epochs run in a 30-epoch digits recipe
    leaves them below full weight for 19 of its 30 epochs), with the value that keeps the share."""
    epochs, notes = spec.recipe.epochs, []
    for method, hparams in declarations.items():
        declared = with_role(hparams, RAMP_EPOCHS)
        if declared is None or search_range(spec, method, declared) is not None:
            continue
        name = declared.name
        warmup = fixed_values(spec, method, hparams).get(name, declared.default)
        points = [p for p in spec.grid if p["method"] == method]
        scaled = max(1, round(epochs * BENCHMARK_WARMUP_SHARE))
        for value in sorted({p.get(name, warmup) for p in points} or {warmup}):
            if value > scaled:
                below = min(value - 1, epochs) / epochs  # the ramp is epoch / warmup, from 1
                notes.append(f"note: {method}'s distillation terms ramp up over {name} = {value} "
                             f"of {epochs} epochs, below full weight for {below:.0%} of the "
                             f"training (the benchmark: 20 of 240); to keep its share: "
                             f"--fixed {method}.{name}={scaled}")
    return notes


def run_study(
    spec: StudySpec,
    *,
    resume: bool = False,
    tracking_uri: str | None = None,
    device: str = "auto",
    question: str = "",
    log: Log = print,
) -> StudyResult:
    """Run the study `spec` describes; with `spec.reseed`, then its seed check. `question`
    heads the parent run's description (a study script passes its docstring's first line)."""
    options: Mapping[str, Any] = dict(resume=resume, tracking_uri=tracking_uri, device=device,
                                      log=log)  # fmt: skip
    result = _run_one(spec, question=question, **options)
    if not spec.reseed:
        return result
    seed_front = rerun_front(spec, result,
                             lambda again: _run_one(again, question=f"Seed check: {question}",
                                                    **options),
                             study_declarations(spec), log)  # fmt: skip
    return dataclasses.replace(result, seed_front=seed_front)
