"""The Ray Tune function trainable, and the Ray-free trial it wraps.

`run_trial` is the whole trial (parse config, seed, train, evaluate) with reporting injected, so
it runs in-process in tests; `tune_trainable` adds only Ray's checkpoint restore and report.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from kdtune import metrics, selfdistill
from kdtune.config import TrialConfig
from kdtune.data import DatasetBundle
from kdtune.engine import EpochEnd, fit, frozen, predict, resolve_device
from kdtune.methods import METHODS, Method
from kdtune.models import build_model
from kdtune.reports import tune_reporter
from kdtune.teacher import Teacher

# metrics, then the resumable training state (None when nothing to checkpoint)
Reporter = Callable[[dict[str, Any], "dict[str, Any] | None"], None]
CHECKPOINT_FILE = "state.pt"
# The benchmark protocol's "best epoch" accuracy: the maximum of the per-epoch test accuracies,
# what most CIFAR-100 KD tables report; its name says the epoch was selected on the test set.
BEST_ON_TEST = "test_acc_best_epoch_selected_on_test"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study shares; sent once through Ray's object store."""

    data: DatasetBundle  # CPU tensors, moved to the trial's device once
    teacher: Teacher | None
    student_model: str
    # the study's methods, shipped with the trials, so a method registered in the driver's
    # process (a script, a notebook) trains on workers that never imported it
    methods: Mapping[str, Method] = field(default_factory=lambda: dict(METHODS))
    device: str = "auto"
    threads: int = 1  # torch intra-op threads, matched to the trial's CPU reservation
    checkpoint_interval_s: float = 0.0  # checkpoint after an epoch once this long has passed
    report_interval_s: float = 0.0  # send epochs to the driver at most this often (batched)
    # epochs reported at once, batching or not: where the scheduler judges trials (its rungs)
    report_epochs: frozenset[int] = frozenset()
    teacher_logits: Tensor | None = None  # the teacher on each training sample, if cached
    # also evaluate the test split after every epoch (a study does only after the last, so that
    # nothing selects on test; bench/blackbox.py records whole test curves)
    test_every_epoch: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prefixed(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}_{name}": value for name, value in values.items()}


def final_metrics(
    student: nn.Module, teacher: nn.Module | None, data: DatasetBundle, precision: str = "auto"
) -> dict[str, Any]:
    """Test metrics, metrics after temperature scaling (T fitted on val; not without a
    validation split, where it could only be fitted on test) and diagnostics."""
    test_logits = predict(student, data.test.x, data.normalize, precision=precision)
    result: dict[str, Any] = {
        **prefixed("test", metrics.evaluate(test_logits, data.test.y)),
        "test_reliability": json.dumps(metrics.reliability_bins(test_logits, data.test.y)),
    }
    if data.holdout:
        val_logits = predict(student, data.val.x, data.normalize, precision=precision)
        temperature = metrics.fit_temperature(val_logits, data.val.y)
        for name, split, logits in (("val", data.val, val_logits),
                                    ("test", data.test, test_logits)):  # fmt: skip
            scaled = metrics.evaluate(logits / temperature, split.y)
            result.update(prefixed(name, {f"{k}_ts": v for k, v in scaled.items()}))
        result["temperature_ts"] = temperature
    if teacher is not None:
        teacher_logits = predict(teacher, data.test.x, data.normalize, precision=precision)
        result["test_agreement"] = metrics.agreement(test_logits, teacher_logits)
        result["test_kl_teacher_student"] = metrics.kl_teacher_student(teacher_logits, test_logits)
        student_linearity = vicinal_linearity(student, data)
        teacher_linearity = vicinal_linearity(teacher, data)
        result.update({
            "train_linearity_student": student_linearity["mean"],
            "train_linearity_teacher": teacher_linearity["mean"],
            # > 0: the student is more linear between training points than its teacher
            "train_linearity_gain": teacher_linearity["mean"] - student_linearity["mean"],
            "train_linearity_gain_peak": teacher_linearity["peak"] - student_linearity["peak"],
        })  # fmt: skip
    return result


@torch.no_grad()
def vicinal_linearity(model: nn.Module, data: DatasetBundle, pairs: int = 2048) -> dict[str, float]:
    """`metrics.vicinal_linearity` on training pairs (x_i, shuffled x_j), lambda ~ U(0, 1).
    A private generator with a fixed seed makes teacher and student see the same pairs."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    n = min(pairs, len(data.train))
    index = torch.randperm(len(data.train), generator=generator)[:n].to(data.train.x.device)
    x_i = data.normalize(data.train.x[index])
    partner = torch.randperm(n, generator=generator).to(x_i.device)
    lam = torch.rand(n, generator=generator).to(x_i.device)
    mixed = (
        lam.view(-1, *[1] * (x_i.dim() - 1)) * x_i
        + (1 - lam.view(-1, *[1] * (x_i.dim() - 1))) * x_i[partner]
    )

    def probs(x: Tensor) -> Tensor:
        return predict(model, x, lambda v: v).softmax(1)

    p_i = probs(x_i)
    return metrics.vicinal_linearity(p_i, p_i[partner], probs(mixed), lam)


def run_trial(
    config: Mapping[str, Any],
    context: TrialContext,
    report: Reporter,
    resume: dict[str, Any] | None = None,
) -> None:
    """Train one student as `config` says and report after every epoch."""
    hparams = {name: method.hparams for name, method in context.methods.items()}
    trial = TrialConfig.from_dict(config, hparams)
    seed_everything(trial.seed)
    device = resolve_device(context.device)
    data = context.data.to(device)
    student = build_model(context.student_model, data.num_classes, data.in_shape).to(device)
    method = context.methods[trial.method]
    teacher_model = None
    if context.teacher is not None:
        teacher_model = context.teacher.build(data.num_classes, data.in_shape, device)

    checkpointed = [time.monotonic()]  # when the last checkpoint was taken
    monitored, _ = data.monitored
    # without a validation split: the best epoch's test accuracy so far (kept in checkpoints)
    best_on_test = [float((resume or {}).get(BEST_ON_TEST, 0.0))]

    def on_epoch(end: EpochEnd) -> None:
        result = {"epoch": end.epoch, "train_loss": end.train_loss, "train_lr": end.lr,
                  **prefixed(monitored, end.val)}  # fmt: skip
        best_on_test[0] = max(best_on_test[0], end.val["acc"])
        last = end.epoch == trial.recipe.epochs
        if last:
            result.update(final_metrics(student, teacher_model, data, trial.recipe.precision))
            if not data.holdout:  # what most benchmark tables report: selected on test
                result[BEST_ON_TEST] = best_on_test[0]
        elif context.test_every_epoch and data.holdout:
            logits = predict(student, data.test.x, data.normalize, precision=trial.recipe.precision)
            result.update(prefixed("test", metrics.evaluate(logits, data.test.y)))
        due = last or time.monotonic() - checkpointed[0] >= context.checkpoint_interval_s
        if due:
            checkpointed[0] = time.monotonic()
        report(result, {**end.state(), BEST_ON_TEST: best_on_test[0]} if due else None)

    if method.uses_teacher and teacher_model is None:
        raise ValueError(f"method {trial.method!r} needs a teacher, but the study has none")
    teacher_fn = frozen(teacher_model, trial.recipe) if method.uses_teacher else None
    cached_logits = None
    if context.teacher_logits is not None and method.uses_teacher:
        cached_logits = context.teacher_logits.to(device)
    fit(student, data, method, trial.params, trial.recipe, teacher=teacher_fn,
        teacher_logits=cached_logits, resume=resume, on_epoch=on_epoch)  # fmt: skip


def tune_trainable(config: dict[str, Any], context: TrialContext) -> None:
    """Ray Tune entry point: restore the last checkpoint if Tune restarted us, then train."""
    from ray import tune

    torch.set_num_threads(context.threads)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(
                Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True
            )

    def save(state: dict[str, Any], folder: Path) -> None:
        torch.save(state, folder / CHECKPOINT_FILE)

    report = tune_reporter(context.report_epochs, context.report_interval_s, save)
    run_trial(config, context, report, resume)


def selfdistill_trainable(config: dict[str, Any]) -> None:
    """Ray Tune entry point of the self-distillation study: one draw of the Gaussian mixture,
    every variant on it, one report per stage (seconds of work: no checkpoint)."""
    from ray import tune

    for record in selfdistill.run_cell(selfdistill.CellConfig.from_dict(config)):
        tune.report(record)
