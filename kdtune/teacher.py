"""Train a teacher once per recipe and cache it under a content hash of that recipe.

The cache key covers the data (its fingerprint), the architecture and the training recipe, so a
changed recipe never reuses a stale teacher. Checkpoints are written atomically and loaded with
`torch.load(weights_only=True)`: a cache file can never execute code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn as nn

from kdtune import augment, metrics, tables
from kdtune.atomic import atomic_path
from kdtune.config import ConfigError, Recipe
from kdtune.data import DatasetBundle
from kdtune.engine import EpochEnd, fit, frozen, predict, resolve_device
from kdtune.methods import METHODS
from kdtune.models import build_model, first_mismatch, load_file, load_weights, sha256_of


@dataclass(frozen=True)
class Teacher:
    model_name: str
    state_dict: dict[str, torch.Tensor]  # on CPU, ready for the object store
    metrics: dict[str, float]  # teacher_{split}_{metric}
    reliability: dict[str, list[float]]  # test-split reliability bins
    path: str
    cached: bool  # True when loaded rather than trained now
    checkpoint_sha256: str = ""  # of the user's checkpoint it came from; "" when kdtune trained it

    def build(self, num_classes: int, in_shape: tuple[int, ...], device: torch.device) -> nn.Module:
        model = build_model(self.model_name, num_classes, in_shape)
        model.load_state_dict(self.state_dict)
        return model.to(device)


def recipe_key(data: DatasetBundle, model_name: str, recipe: Recipe, seed: int) -> str:
    # compiling, the memory layout and the fused optimiser change how fast a teacher trains, not
    # what it learns (precision does change it)
    return _key(data, model_name, seed=seed, recipe={
        k: v for k, v in dataclasses.asdict(recipe).items()
        if k not in ("compile", "channels_last", "fused_optimizer")})  # fmt: skip


def _key(data: DatasetBundle, model_name: str, **source: Any) -> str:
    """The cache key of a teacher of `model_name` on `data` made from `source` (a recipe and
    seed, or a checkpoint's digest)."""
    # weights_layout 2: the CIFAR ResNets took mdistiller's module names; an older cache file
    # must not be loaded into the renamed modules
    description = {"data": data.fingerprint(), "model": model_name, "weights_layout": 2, **source}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def _load(path: Path, data: DatasetBundle, model_name: str) -> dict[str, Any]:
    """A cached teacher, or one ConfigError that names the file and says to delete it."""
    delete = "delete it to retrain the teacher"
    saved = load_file(path, f"it is corrupt or not kdtune's; {delete}")
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    model = build_model(model_name, data.num_classes, data.in_shape)
    mismatch = (first_mismatch(model.state_dict(), state, model_name) if isinstance(state, dict)
                else "no 'state_dict' entry")
    if mismatch:
        raise ConfigError(f"teacher checkpoint {path} is not a {model_name!r} for "
                          f"{data.num_classes} classes ({mismatch}); {delete}")  # fmt: skip
    model.load_state_dict(state)
    return saved


def _evaluate(
    model: nn.Module, data: DatasetBundle
) -> tuple[dict[str, float], dict[str, list[float]]]:
    results: dict[str, float] = {}
    for split_name in ("val", "test") if data.holdout else ("test",):
        split = getattr(data, split_name)
        logits = predict(model, split.x, data.normalize)
        results.update(
            {f"teacher_{split_name}_{k}": v for k, v in metrics.evaluate(logits, split.y).items()}
        )
    return results, metrics.reliability_bins(logits, data.test.y)


def _progress(log: Any, epochs: int, monitored: str) -> Any:
    def hook(end: EpochEnd) -> None:
        if end.epoch % max(1, epochs // 5) == 0 or end.epoch == epochs:
            log(
                f"teacher: epoch {end.epoch}/{epochs} loss {end.train_loss:.4f} "
                f"{monitored}_acc {end.val['acc']:.4f}"
            )

    return hook


TrainedTeacher = dict[str, Any]  # {"state_dict", "metrics", "reliability"}: what the cache holds


def adopt_teacher(
    data: DatasetBundle, model_name: str, checkpoint: str | Path, *, device: str = "auto"
) -> TrainedTeacher:  # fmt: skip
    """A teacher trained elsewhere: the checkpoint's weights in `model_name` (one ConfigError if
    they do not fit), measured on this data as a teacher trained here would be."""
    model = build_model(model_name, data.num_classes, data.in_shape)
    load_weights(model, checkpoint, model_name)
    target = resolve_device(device)
    teacher_metrics, reliability = _evaluate(model.to(target).eval(), data.to(target))
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"state_dict": state_dict, "metrics": teacher_metrics, "reliability": reliability}


def train_teacher(
    data: DatasetBundle, model_name: str, recipe: Recipe, *, seed: int, device: str = "auto",
    log: Any = print,
) -> TrainedTeacher:  # fmt: skip
    """Train a teacher with the one training loop and measure it; CPU tensors out."""
    data = data.to(resolve_device(device))
    torch.manual_seed(seed)
    model = build_model(model_name, data.num_classes, data.in_shape).to(data.train.x.device)
    log(f"teacher: training {model_name} on {data.name} for {recipe.epochs} epochs ...")
    progress = _progress(log, recipe.epochs, data.monitored[0])
    fit(model, data, METHODS["ce"], {}, recipe, on_epoch=progress)
    teacher_metrics, reliability = _evaluate(model, data)
    state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"state_dict": state_dict, "metrics": teacher_metrics, "reliability": reliability}


def get_teacher(
    data: DatasetBundle, model_name: str, recipe: Recipe, *, seed: int, cache_dir: str | Path,
    log: Any = print, train: Any = train_teacher, checkpoint: str | Path = "",
) -> Teacher:  # fmt: skip
    """Load the cached teacher for this exact recipe, or train it with `train` (same signature
    as `train_teacher`; a study passes a Ray task on a GPU worker) and cache it here. With a
    `checkpoint`, the teacher is that file's weights instead (cached, with its metrics on this
    data, under the file's SHA-256; the recipe and seed are unused)."""
    if checkpoint:
        digest = sha256_of(checkpoint)
        key = _key(data, model_name, checkpoint_sha256=digest)

        def make() -> TrainedTeacher:
            log(f"teacher: {model_name} from {checkpoint} (sha256 {digest[:12]}...), measuring it")
            return adopt_teacher(data, model_name, checkpoint)
    else:
        digest, key = "", recipe_key(data, model_name, recipe, seed)

        def make() -> TrainedTeacher:
            return train(data, model_name, recipe, seed=seed)

    path = Path(cache_dir) / f"{model_name}-{data.name}-{key}.pt"
    cached = path.exists()
    if cached:
        saved = _load(path, data, model_name)
        log(f"teacher: loaded {model_name} from {path}")
    else:
        saved = make()
        with atomic_path(path) as temp:
            torch.save(saved, temp)
        log(f"teacher: test acc {saved['metrics']['teacher_test_acc']:.4f}, "
            f"test ECE {saved['metrics']['teacher_test_ece']:.4f}; cached at {path}")  # fmt: skip
    return Teacher(model_name, saved["state_dict"], saved["metrics"], saved["reliability"],
                   str(path), cached, digest)  # fmt: skip


def train_logits(
    teacher: Teacher, data: DatasetBundle, *, device: str = "auto", log: Any = print
) -> torch.Tensor:  # fmt: skip
    """The teacher's float32 logits on the un-augmented training split, row i for sample i
    (CPU), computed as a trial's teacher would (eval mode, bf16 autocast on CUDA)."""
    target = resolve_device(device)
    log(f"teacher: computing logits of {len(data.train)} training samples on {target} ...")
    model = teacher.build(data.num_classes, data.in_shape, target)
    return predict(model, data.train.x.to(target), data.normalize).cpu()


def get_train_logits(
    teacher: Teacher, data: DatasetBundle, *, log: Any = print, compute: Any = train_logits
) -> torch.Tensor:  # fmt: skip
    """`train_logits`, cached as Parquet (columns `index` and `logits`) beside the teacher's
    checkpoint, whose name already ties it to the data and the teacher's recipe."""
    path = Path(teacher.path).with_suffix(".train_logits.parquet")
    if path.exists():
        table = tables.read_table(path).sort_by("index")
        flat = np.asarray(table["logits"].combine_chunks().flatten(), dtype=np.float32)
        logits = torch.from_numpy(flat.reshape(table.num_rows, -1).copy())
        if table["index"].to_pylist() != list(range(len(data.train))) or (
            logits.shape[1] != data.num_classes
        ):
            raise ConfigError(f"cache_teacher_logits: {path} does not match the training split; "
                              "delete it and it is computed again")  # fmt: skip
        log(f"teacher: loaded training-split logits from {path}")
        return logits
    logits = compute(teacher, data)
    column = pa.FixedSizeListArray.from_arrays(pa.array(logits.numpy().ravel()), logits.shape[1])
    tables.write_table(
        pa.table({"index": pa.array(np.arange(len(logits), dtype=np.int64)), "logits": column}),
        path,
    )
    log(f"teacher: cached logits of {len(logits)} training samples at {path}")
    return logits


@torch.no_grad()
def teacher_t_stddev(
    model: nn.Module, data: DatasetBundle, augmentation: str, *, epochs: int = 10,
    batch_size: int = 64, chunk_size: int = 640, seed: int = 0, scorer: nn.Module | None = None,
) -> float:  # fmt: skip
    """Good-DA-in-KD's T.stddev of an augmentation, from the teacher alone (no student trained).

    As the paper's `check_ce_var` run: every training batch (crop+flip) and its augmented copy
    go through the teacher, their softmax vectors are buffered in that order, and
    `metrics.t_stddev` takes chunks of 640 (10 batches of 64). Lower predicts a better student.
    `scorer` is the network whose entropy CutMixPick picks by (default: the teacher; the paper
    also picks by a fixed student's).
    """
    if augmentation not in augment.AUGMENTATIONS:
        raise ConfigError(f"augmentation: unknown {augmentation!r}; choose one of "
                          f"{sorted(augment.AUGMENTATIONS)}")  # fmt: skip
    torch.manual_seed(seed)
    teacher = frozen(model)
    picker = frozen(scorer) if scorer is not None else teacher
    probs = []
    n = len(data.train)
    for _ in range(epochs):
        order = torch.randperm(n, device=data.train.x.device)
        for start in range(0, n - batch_size + 1, batch_size):
            raw = data.train.x[order[start : start + batch_size]]
            x = data.normalize(augment.crop_flip(raw, padding=data.crop_padding, flip=data.flip))
            extra = augment.AUGMENTATIONS[augmentation](x, picker, normalize=data.normalize)
            probs += [teacher(x).softmax(1), teacher(extra).softmax(1)]
    return metrics.t_stddev(torch.cat(probs), chunk_size)
