"""The simulated backend: a Ray Tune trainable that replays the learning-curve blackbox's
measured curves instead of training, and the Tune reporting it shares with the real trainable.

A simulated study runs everything a real one does (the searcher, MO-ASHA, the tracking
callback, the MLflow record, progress, outcome, importance) except the training: each epoch's
report is the blackbox's measured value for the trial's configuration, sent after a short
sleep that stands for the epoch. So a study's set-up (concurrency, GPUs declared per trial, the
store, the progress lines) can be tried in minutes on a laptop before a cluster is paid for.

This module imports no torch: 64 replaying workers on a small machine each import only Ray
Tune, numpy and pyarrow (torch would add ~600 MB and seconds of start-up per worker).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdtune.blackbox import Blackbox
from kdtune.config import TrialConfig
from kdtune.hparams import HParam
from kdtune.reports import tune_reporter

STATE_FILE = "simulated.json"  # a replaying trial's checkpoint: the epoch it reached
# What a replaying trial asks of Ray: a sliver of a CPU, so that 64 fit on a 2-core machine
# (it sleeps; the driver's callback does the real work)
SIMULATED_CPUS = 0.01
# what identifies the replayed curve, in every report: the measured configuration and seed
SIMULATED_KEYS = ("simulated_config", "simulated_seed")


@dataclass(frozen=True)
class SimulatedContext:
    """What every replaying trial shares; sent once through Ray's object store (the blackbox
    travels with it, so workers need not see the file)."""

    blackbox: Blackbox
    declarations: Mapping[str, tuple[HParam, ...]]  # the study's methods' hyperparameters
    epoch_s: float = 0.1  # the sleep that stands for one epoch
    checkpoint_interval_s: float = 0.0
    report_interval_s: float = 0.0
    report_epochs: frozenset[int] = frozenset()


def replayed_reports(
    config: Mapping[str, Any], blackbox: Blackbox, declarations: Mapping[str, tuple[HParam, ...]]
) -> list[dict[str, Any]]:
    """What a real trial of `config` would report, epoch by epoch, as the blackbox measured it:
    `epoch` and the per-epoch metrics (train_*, val_*) every epoch, the test metrics and those
    after temperature scaling at the last (as `trainable.run_trial` reports them: nothing is
    selected on test). The measured seed is the trial's seed modulo the measured ones, so the
    trials of a study (one seed, as a real study trains them) replay one measured seed, and its
    replicates (the next seeds) the others."""
    trial = TrialConfig.from_dict(config, declarations)
    found = blackbox.query(trial.method, trial.params, trial.seed)
    epochs = trial.recipe.epochs
    identity = {"simulated_config": found.config, "simulated_seed": found.seed}
    reports = []
    for index in range(epochs):
        last = index == epochs - 1
        values = {name: float(curve[index]) for name, curve in found.curve.items()
                  if not np.isnan(curve[index])
                  and (last or not name.startswith("test_"))}  # fmt: skip
        reports.append({"epoch": index + 1, **values, **identity})
    return reports


def simulated_trainable(config: dict[str, Any], context: SimulatedContext) -> None:
    """Ray Tune entry point of a simulated trial: replay the configuration's measured curve, one
    epoch per `epoch_s`, from the epoch of the last checkpoint if Tune restarted it. It never
    touches a GPU, whatever Ray granted it."""
    from ray import tune

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int(json.loads((Path(folder) / STATE_FILE).read_text())["epoch"])

    def save(state: dict[str, Any], folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(state))

    report = tune_reporter(context.report_epochs, context.report_interval_s, save)
    reports = replayed_reports(config, context.blackbox, context.declarations)
    checkpointed = time.monotonic()
    for result in reports[start:]:
        time.sleep(context.epoch_s)
        last = result["epoch"] == len(reports)
        due = last or time.monotonic() - checkpointed >= context.checkpoint_interval_s
        if due:
            checkpointed = time.monotonic()
        report(result, {"epoch": result["epoch"]} if due else None)
