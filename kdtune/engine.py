"""The one training loop: optimiser, LR schedule, AMP on CUDA, epochs, per-epoch validation.

Teachers and students, every method, every dataset go through `fit`. Data stays on the device
as uint8; each batch is augmented and normalised there (no DataLoader on the hot path). On CUDA
the networks run in bf16 autocast and channels_last with a fused optimiser; `Recipe.compile`
adds torch.compile.
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
from kdtune.methods import Method, StepBatch, TeacherFn


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the trial cannot continue."""


class TeacherCacheError(RuntimeError):
    """A method asked cached teacher logits for inputs other than the batch's own."""


@dataclass(frozen=True)
class EpochEnd:
    epoch: int  # 1-based, the number of finished epochs
    train_loss: float
    lr: float
    val: dict[str, float]  # metrics.evaluate on the validation split
    state: Callable[[], dict[str, Any]]  # everything needed to resume after this epoch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _optimizer(model: nn.Module, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    # fused: one kernel updates every parameter instead of a few per tensor (CUDA only)
    fused = device.type == "cuda"
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay,
                                 fused=fused)  # fmt: skip
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9,
                           weight_decay=recipe.weight_decay, fused=fused)  # fmt: skip


def accelerated(model: nn.Module, device: torch.device, compile: bool = False) -> nn.Module:
    """The callable that runs `model` fast on `device`: channels_last on CUDA (what tensor-core
    convolutions want; a no-op for layers without 4-D weights), compiled if asked. Parameters and
    state_dict stay those of `model`."""
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile else model


def _lr_factor(recipe: Recipe) -> Callable[[int], float]:
    """Multiplier of the peak LR at the start of epoch e (0-based)."""
    if recipe.schedule == "step":
        milestones = (recipe.epochs // 2, (3 * recipe.epochs) // 4)
        return lambda e: 0.1 ** sum(e >= m for m in milestones)
    return lambda e: 0.5 * (1 + math.cos(math.pi * e / recipe.epochs))


def _autocast(device: torch.device):
    # bf16 needs no loss scaling and is what Hopper/Ampere run fastest; CPU stays in fp32.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def predict(
    model: nn.Module, x: Tensor, normalize: Callable[[Tensor], Tensor], batch_size: int = 1024
) -> Tensor:
    """Float32 logits for uint8 inputs, in eval mode (the model's mode is restored after)."""
    was_training = model.training
    model.eval()
    with _autocast(x.device):
        logits = torch.cat(
            [model(normalize(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        )
    model.train(was_training)
    return logits.float()


def frozen(model: nn.Module, compile: bool = False) -> TeacherFn:
    """A teacher callable: eval mode, no autograd at all (inference mode), float32 logits."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    forward = accelerated(model, next(model.parameters()).device, compile)

    def teacher(x: Tensor) -> Tensor:
        with torch.inference_mode():
            logits = forward(x).float()
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


def fit(
    model: nn.Module,
    data: DatasetBundle,
    method: Method,
    params: Mapping[str, float | str],
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
    student = accelerated(model, device, recipe.compile)
    optimizer = _optimizer(model, recipe, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(recipe))
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        torch.set_rng_state(resume["rng"].cpu())
        start_epoch = int(resume["epoch"])

    def state(epoch: int) -> dict[str, Any]:
        # a snapshot, not views of live tensors that the next step would overwrite
        return copy.deepcopy(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "epoch": epoch,
            }
        )

    n = len(data.train)
    fill = torch.tensor([round(255 * m) for m in data.mean], dtype=torch.uint8, device=device)
    warmup = float(params.get("warmup", 0))
    for epoch in range(start_epoch, recipe.epochs):
        # linear warm-up of the distillation terms over `warmup` epochs (counted from 1)
        kd_scale = min(1.0, (epoch + 1) / warmup) if warmup > 0 else 1.0
        model.train()
        order = torch.randperm(n, device=device)
        total_loss, seen = 0.0, 0
        for start in range(0, n, recipe.batch_size):
            index = order[start : start + recipe.batch_size]
            if len(index) < 2:  # BatchNorm cannot train on a single sample
                continue
            x = data.train.x[index]
            if recipe.augment:
                x = augment.crop_flip(x, padding=data.crop_padding, flip=data.flip)
            batch = StepBatch(data.normalize(x), data.train.y[index], data.num_classes, raw=x,
                              normalize=data.normalize, fill=fill, kd_scale=kd_scale)  # fmt: skip
            if teacher_logits is not None:
                teacher = cached_teacher(teacher_logits[index], batch.x)
            with _autocast(device):
                loss = method.step(student, teacher, batch, params)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite loss ({loss.item()}) at epoch {epoch + 1}: "
                    f"lower the learning rate (lr={recipe.lr}) or the loss weights"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(index)
            seen += len(index)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        if on_epoch is not None:
            val_logits = predict(model, data.val.x, data.normalize)
            on_epoch(
                EpochEnd(
                    epoch + 1,
                    total_loss / max(seen, 1),
                    lr,
                    metrics.evaluate(val_logits, data.val.y),
                    lambda e=epoch + 1: state(e),
                )
            )
    return model
