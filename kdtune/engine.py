"""The one training loop: optimiser, LR schedule, the fast path, epochs, per-epoch validation.

Teachers and students, every method, every dataset go through `fit`. Data stays on the device
as uint8; each batch is augmented and normalised there (no DataLoader on the hot path), and the
loop asks the device for nothing per step: the loss is summed on the device and read (and checked
for NaN) every `NONFINITE_CHECK_STEPS` steps and at the end of the epoch. The fast path is three
recipe switches (`precision`, `channels_last`, `fused_optimizer`), on by default on CUDA and off
elsewhere, each of which also runs on CPU; `Recipe.compile` adds torch.compile.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from kdtune import augment, metrics
from kdtune.config import Recipe
from kdtune.data import DatasetBundle
from kdtune.hparams import RAMP_EPOCHS, with_role
from kdtune.methods import Method, Network, StepBatch, TeacherFn

# A NaN loss is caught within this many steps (one host sync each), and at every epoch's end.
NONFINITE_CHECK_STEPS = 50


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the trial cannot continue."""


class TeacherCacheError(RuntimeError):
    """A method asked cached teacher logits for inputs other than the batch's own."""


@dataclass(frozen=True)
class EpochEnd:
    epoch: int  # 1-based, the number of finished epochs
    train_loss: float
    lr: float
    # metrics.evaluate on the split each epoch is evaluated on (`data.monitored`): validation,
    # or test under the benchmark protocol
    val: dict[str, float]
    state: Callable[[], dict[str, Any]]  # everything needed to resume after this epoch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _on(setting: str, device: torch.device) -> bool:
    """A fast-path switch ("auto" | "on" | "off", or a precision): auto means on CUDA only."""
    return setting in ("on", "bf16") or (setting == "auto" and device.type == "cuda")


def _optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    fused = _on(recipe.fused_optimizer, device)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                 fused=fused)  # fmt: skip
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9,
                           weight_decay=recipe.weight_decay, fused=fused)  # fmt: skip


def _autocast(device: torch.device, precision: str):
    # bf16 needs no loss scaling and is what Hopper/Ampere run fastest
    if _on(precision, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def network(model: nn.Module, device: torch.device, recipe: Recipe) -> Network:
    """The callable that runs `model` as `recipe` says on `device`: channels_last weights,
    compiled, under bf16 autocast, whichever are on. It returns float32 logits, so softmax,
    standardisation and every loss run in float32 outside autocast. Parameters and state_dict
    stay those of `model`."""
    if _on(recipe.channels_last, device):
        model.to(memory_format=torch.channels_last)  # a no-op for layers without 4-D weights
    forward = torch.compile(model) if recipe.compile else model

    def run(x: Tensor) -> Tensor:
        with _autocast(device, recipe.precision):
            return forward(x).float()

    return run


def step_milestones(epochs: int) -> tuple[int, ...]:
    """The 0-based epochs from which the step schedule divides the LR by 10 once more: at 5/8,
    3/4 and 7/8 of the training, the CIFAR-100 KD benchmark's 150, 180 and 210 of 240
    (mdistiller, RepDistiller, CRLD; ending at x0.001)."""
    return tuple(round(epochs * fraction) for fraction in (5 / 8, 3 / 4, 7 / 8))


def _lr_factor(recipe: Recipe) -> Callable[[int], float]:
    """Multiplier of the peak LR at the start of epoch e (0-based)."""
    if recipe.schedule == "step":
        milestones = step_milestones(recipe.epochs)
        return lambda e: 0.1 ** sum(e >= m for m in milestones)
    return lambda e: 0.5 * (1 + math.cos(math.pi * e / recipe.epochs))


@torch.no_grad()
def predict(
    model: nn.Module, x: Tensor, normalize: Callable[[Tensor], Tensor], batch_size: int = 1024,
    precision: str = "auto",
) -> Tensor:  # fmt: skip
    """Float32 logits for uint8 inputs, in eval mode (the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    with _autocast(x.device, precision):
        logits = torch.cat(
            [model(normalize(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        )
    model.train(was_training)
    return logits.float()


def frozen(model: nn.Module, recipe: Recipe | None = None) -> TeacherFn:
    """A teacher callable: eval mode, no autograd at all (inference mode), float32 logits, run
    with `recipe`'s fast path (its defaults if None)."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    forward = network(model, next(model.parameters()).device, recipe or Recipe())

    def teacher(x: Tensor) -> Tensor:
        with torch.inference_mode():
            logits = forward(x)
        # an inference tensor cannot be saved for the student's backward pass; a copy can
        return logits.clone()

    return teacher


def cached_teacher(logits: Tensor, inputs: Tensor) -> TeacherFn:
    """The teacher of one batch, answered from cached logits: only for the batch's own inputs.
    Mixed, cut or re-augmented inputs have no cached logits, so asking for them is an error."""

    def teacher(x: Tensor) -> Tensor:
        if x is not inputs:
            raise TeacherCacheError(
                "cached teacher logits exist only for the training batch itself, but the method "
                "queried the teacher on other inputs: set cache_teacher_logits = false"
            )
        return logits

    return teacher


@dataclass(frozen=True)
class _Loop:
    """What every step of a training reads: built once, before the first epoch."""

    student: Network
    model: nn.Module
    data: DatasetBundle
    method: Method
    params: Mapping[str, Any]
    recipe: Recipe
    optimizer: torch.optim.Optimizer
    normalize: Callable[[Tensor], Tensor]
    fill: Tensor
    teacher: TeacherFn | None
    teacher_logits: Tensor | None

    def batch(self, index: Tensor, kd_scale: float) -> tuple[StepBatch, TeacherFn | None]:
        source = self.data.train.x[index]
        padding = self.data.crop_padding if self.recipe.augment else 0
        flip = self.data.flip and self.recipe.augment
        x = augment.crop_flip(source, padding=padding, flip=flip)
        batch = StepBatch(self.normalize(x), self.data.train.y[index], self.data.num_classes,
                          raw=x, normalize=self.normalize, fill=self.fill, kd_scale=kd_scale,
                          source=source, crop_padding=padding, flip=flip)  # fmt: skip
        if self.teacher_logits is not None:
            return batch, cached_teacher(self.teacher_logits[index], batch.x)
        return batch, self.teacher

    def epoch(self, epoch: int) -> float:
        """One epoch of training; its mean loss (read from the device once per check window)."""
        ramp = with_role(self.method.hparams, RAMP_EPOCHS)
        warmup = self.params.get(ramp.name, 0) if ramp else 0
        # linear warm-up of the distillation terms over `warmup` epochs (counted from 1)
        kd_scale = min(1.0, (epoch + 1) / warmup) if warmup > 0 else 1.0
        self.model.train()
        n = len(self.data.train)
        order = torch.randperm(n, device=self.data.train.x.device)
        loss_sum = torch.zeros((), device=self.data.train.x.device)
        seen = 0
        for step, start in enumerate(range(0, n, self.recipe.batch_size)):
            index = order[start : start + self.recipe.batch_size]
            if len(index) < 2:  # BatchNorm cannot train on a single sample
                continue
            batch, teacher = self.batch(index, kd_scale)
            loss = self.method.step(self.student, teacher, batch, self.params)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(index)
            seen += len(index)
            if (step + 1) % NONFINITE_CHECK_STEPS == 0:
                self.check_finite(loss_sum.item(), epoch)
        mean = loss_sum.item() / max(seen, 1)
        self.check_finite(mean, epoch)
        return mean

    def check_finite(self, loss: float, epoch: int) -> None:
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss ({loss}) at epoch {epoch + 1}: "
                f"lower the learning rate (lr={self.recipe.lr}) or the loss weights"
            )


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    """The random state a resumed training needs: the CPU generator, and the GPU's (batch order
    and on-device augmentation draw from the generator of the data's device)."""
    state = {"rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["rng"].cpu())
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)


def fit(
    model: nn.Module,
    data: DatasetBundle,
    method: Method,
    params: Mapping[str, Any],
    recipe: Recipe,
    *,
    teacher: TeacherFn | None = None,
    teacher_logits: Tensor | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[EpochEnd], None] | None = None,
) -> nn.Module:
    """Train `model` on `data.train` (already on the model's device) and validate every epoch.
    `teacher_logits` (row i: the teacher on training sample i, un-augmented) replaces the
    teacher's forward pass; it needs `recipe.augment` off."""
    device = data.train.x.device
    if teacher_logits is not None and recipe.augment and (data.crop_padding or data.flip):
        raise TeacherCacheError(
            "cached teacher logits need the same inputs every epoch, but random crop/flip is on: "
            "set recipe.augment = false (--no-augment) or cache_teacher_logits = false"
        )
    optimizer = _optimizer(model, recipe, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(recipe))
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        _set_rng_state(resume, device)
        start_epoch = int(resume["epoch"])
    fill = torch.tensor([round(255 * m) for m in data.mean], dtype=torch.uint8, device=device)
    loop = _Loop(network(model, device, recipe), model, data, method, params, recipe, optimizer,
                 data.normalizer(device), fill, teacher, teacher_logits)  # fmt: skip

    def state(epoch: int) -> dict[str, Any]:
        # a snapshot, not views of live tensors that the next step would overwrite
        return copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), **_rng_state(device),
                              "epoch": epoch})  # fmt: skip

    for epoch in range(start_epoch, recipe.epochs):
        train_loss = loop.epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if on_epoch is not None:
            _, split = data.monitored
            logits = predict(model, split.x, loop.normalize, precision=recipe.precision)
            scores = metrics.evaluate(logits, split.y)
            on_epoch(EpochEnd(epoch + 1, train_loss, lr, scores, lambda e=epoch + 1: state(e)))
    return model
