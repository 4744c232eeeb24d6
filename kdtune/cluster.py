"""Ray for a study: starting it here or joining a cluster, how much of its own output shows, and
whether the CPUs and GPUs a trial asks for are there (said before anything slow starts)."""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kdtune import cluster_in_sight
from kdtune.config import ConfigError, Log
from kdtune.search import quiet_optuna

_T = TypeVar("_T")
_RAY_LOG_LEVEL = logging.INFO  # what ray.init is told; set_verbosity changes it


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
