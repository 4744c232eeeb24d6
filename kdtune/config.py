"""The study's vocabulary: frozen, validated configuration dataclasses (standard library only).

`from_dict` rejects unknown keys (with a "did you mean") and out-of-range values with one
`ConfigError` sentence that names the field and the fix. Name checks against the registries
(datasets, models, methods) are done by the caller, who passes the registries in, so this
module stays free of torch, Ray and MLflow.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class ConfigError(ValueError):
    """Bad user input: the message names the field and the fix."""


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


# Range rules by parameter name, shared by recipes, method hyperparameters and search bounds.
# The few hyperparameters that are names, not numbers. `augmentation` names the entries of
# kdtune.augment.AUGMENTATIONS (a test keeps the two lists equal; this module imports no torch).
CHOICES = {
    "pick": ("s_ent", "t_ent"),
    "augmentation": ("identity", "flip", "crop_flip", "cutout", "mixup", "cutmix", "cutmixpick"),
}
SWITCHES = ("logit_standardize", "topk_scale")  # 0 = off, 1 = on


def check_param(name: str, value: Any) -> None:
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ConfigError(f"{name}: must be one of {list(CHOICES[name])}, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    whole = value == int(value)
    rules = [
        ((name.endswith("temperature") or name == "lr") and value <= 0, "must be > 0"),
        (name == "alpha" and value < 0, "(mixup alpha) must be >= 0"),
        (name.startswith(("w_", "topk_")) and value < 0, "must be >= 0"),
        (name == "weight_decay" and value < 0, "must be >= 0"),
        (name.startswith("tau") and not 0 <= value <= 1, "is a probability: must lie in [0, 1]"),
        (name == "partial" and not 0 <= value <= 1, "is a fraction: must lie in [0, 1]"),
        (name in ("epochs", "batch_size", "k") and (value < 1 or not whole),
         "must be a whole number >= 1"),
        (name == "warmup" and (value < 0 or not whole), "(epochs) must be a whole number >= 0"),
        (name in SWITCHES and value not in (0, 1), "is a switch: must be 0 or 1"),
    ]  # fmt: skip
    for broken, rule in rules:
        if broken:
            raise ConfigError(f"{name}: {rule}, got {value!r}")


@dataclass(frozen=True)
class Recipe:
    """How a network is trained; shared by teacher and student trainings."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05  # peak learning rate; SGD uses momentum 0.9
    optimizer: str = "sgd"  # "sgd" or "adamw"
    schedule: str = "cosine"  # "cosine" (to 0 over the epochs) or "step" (x0.1 at 50% and 75%)
    weight_decay: float = 5e-4
    # the dataset's random training augmentation (crop, flip); off keeps every epoch's inputs
    # identical, which is what caching the teacher's logits needs
    augment: bool = True
    # torch.compile the networks (worth it on GPUs for long trainings: the first epoch pays the
    # compilation, later trials on the node reuse inductor's on-disk cache)
    compile: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "lr", "weight_decay"):
            check_param(name, getattr(self, name))
        for name in ("augment", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer: must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step"):
            raise ConfigError(f"schedule: must be 'cosine' or 'step', got {self.schedule!r}")


RECIPE_KEYS = [f.name for f in fields(Recipe)]


@dataclass(frozen=True)
class TrialConfig:
    """One trial: a method, its hyperparameters, the training recipe and the seed."""

    method: str
    params: Mapping[str, float | str]
    recipe: Recipe
    seed: int = 0

    @classmethod
    def from_dict(
        cls, raw: Mapping[str, Any], method_defaults: Mapping[str, Mapping[str, float | str]]
    ) -> TrialConfig:
        """Parse a flat trial dict (what Ray Tune hands a trial); missing params take defaults."""
        method = raw.get("method")
        if method not in method_defaults:
            raise ConfigError(
                f"method: unknown {method!r}; choose one of {sorted(method_defaults)}"
            )
        defaults = method_defaults[method]
        params = dict(defaults)
        recipe_values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("method", "seed"):
                continue
            if key in RECIPE_KEYS:
                recipe_values[key] = value
            elif key in defaults:
                check_param(key, value)
                params[key] = value if key in CHOICES else float(value)
            else:
                valid = ["method", "seed", *RECIPE_KEYS, *defaults]
                raise _unknown_key_error(key, valid, f"trial config for method {method!r}")
        recipe = Recipe(**recipe_values)
        return cls(method=method, params=params, recipe=recipe, seed=int(raw.get("seed", 0)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "seed": self.seed,
            **dataclasses.asdict(self.recipe),
            **self.params,
        }


@dataclass(frozen=True)
class StudySpec:
    """Everything a study needs; validated before Ray starts."""

    name: str = "temperature_sweep"
    dataset: str = "digits"
    data_root: str = "./data"
    download: bool = False  # only fetch CIFAR from the internet when asked
    teacher: str = "cnn"
    student: str = "mlp"
    methods: tuple[str, ...] = ("kd", "mixup_kd")
    # Search ranges that override the method's default space: {"temperature": (1.0, 16.0)}.
    search: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # Hyperparameters held fixed instead of searched: {"w_ce": 0.0}.
    fixed: Mapping[str, float | str] = field(default_factory=dict)
    # Explicit trials instead of an Optuna search: each point names a method and the
    # hyperparameters it sets ({"method": "kd", "temperature": 2.0}); the others take `fixed`,
    # then the method's defaults. Every point runs once per entry of `seeds`.
    grid: tuple[Mapping[str, float | str], ...] = ()
    # Trial seeds of a grid study (default: `seed` alone). The data split and the teacher always
    # use `seed`, so repeated trials differ only in the student's initialisation and batches.
    seeds: tuple[int, ...] = ()
    # After a search: re-run each Pareto configuration with these seeds (keep them apart from
    # `seed`, which the search selected on) and report the front of the seed means, so that a
    # lucky seed is not reported as a front. A second study, named NAME-reseed, runs them.
    reseed: tuple[int, ...] = ()
    objectives: tuple[tuple[str, str], ...] = (("val_acc", "max"), ("val_ece", "min"))
    num_samples: int = 16
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)
    teacher_recipe: Recipe = field(default_factory=lambda: Recipe(epochs=30))
    storage_path: str = "./ray_results"
    max_failures: int = 2  # restarts of a crashed trial from its last checkpoint
    # A trial checkpoints after an epoch once this many seconds passed since its last checkpoint
    # (and after its last epoch): a crash costs at most this much training; 0 = every epoch.
    checkpoint_interval_s: float = 10.0
    # A trial sends its epochs to the driver at most this often (checkpoints and the last epoch
    # always go at once): every epoch still reaches MLflow, but trials of many short epochs
    # do not pay Tune's round trip per epoch. 0 = every epoch.
    report_interval_s: float = 1.0
    # Compute the teacher's logits on the training split once (Parquet beside the cached
    # teacher) and look them up instead of running the teacher every step. Needs
    # recipe.augment = false and methods that query the teacher on the batch alone.
    cache_teacher_logits: bool = False

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"name: use letters, digits, '-', '_' or '.', got {self.name!r}")
        if not self.methods:
            raise ConfigError("methods: list at least one method")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples: must be >= 1, got {self.num_samples}")
        if self.max_concurrent_trials < 1:
            raise ConfigError(
                f"max_concurrent_trials: must be >= 1, got {self.max_concurrent_trials}"
            )
        if self.cpus_per_trial <= 0:
            raise ConfigError(f"cpus_per_trial: must be > 0, got {self.cpus_per_trial}")
        for name in ("checkpoint_interval_s", "report_interval_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.gpus_per_trial < 0:
            raise ConfigError(f"gpus_per_trial: must be >= 0, got {self.gpus_per_trial}")
        for metric, mode in self.objectives:
            if mode not in ("max", "min"):
                raise ConfigError(
                    f"objectives: mode of {metric!r} must be 'max' or 'min', got {mode!r}"
                )
        for name, value in self.fixed.items():
            check_param(name, value)
        self._check_grid()
        for name, bounds in self.search.items():
            if len(bounds) != 2 or not bounds[0] <= bounds[1]:
                raise ConfigError(
                    f"search.{name}: give (low, high) with low <= high, got {bounds!r}"
                )
            for bound in bounds:
                check_param(name, bound)

    def _check_grid(self) -> None:
        if self.seeds and not self.grid:
            raise ConfigError("seeds: repeated seeds need a grid of points; "
                              "give `grid` or leave `seeds` empty")  # fmt: skip
        for name in ("seeds", "reseed"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ConfigError(f"{name}: list each seed once, got {list(values)}")
        if self.reseed and self.grid:
            raise ConfigError("reseed: a grid study repeats its points already; "
                              "give their seeds in `seeds`")  # fmt: skip
        if self.grid and self.search:
            raise ConfigError("search: a grid study searches nothing; "
                              "put the values to try in `grid` points instead")  # fmt: skip
        for i, point in enumerate(self.grid):
            method = point.get("method")
            if method not in self.methods:
                raise ConfigError(
                    f"grid[{i}].method: {method!r} is not among methods {list(self.methods)}; "
                    "add it there or fix the point"
                )
            if "seed" in point:
                raise ConfigError(f"grid[{i}].seed: give trial seeds once, in `seeds`")

    @property
    def trial_seeds(self) -> tuple[int, ...]:
        return self.seeds or (self.seed,)

    @property
    def trial_count(self) -> int:
        """Trials the study runs: the grid times the seeds, or `num_samples` searched ones."""
        return len(self.grid) * len(self.trial_seeds) if self.grid else self.num_samples

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StudySpec:
        """Build a spec from plain data (a TOML file); nested recipes are tables."""
        if not isinstance(raw, Mapping):
            raise ConfigError("study spec: must be a table of keys and values")
        valid = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in valid:
                raise _unknown_key_error(str(key), valid, "study spec")
            values[key] = _parse_spec_value(key, value)
        return cls(**values)


_NUMBER = (int, float)
_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("name", "dataset", "data_root", "teacher", "student", "storage_path"), (str,)),
    **dict.fromkeys(("num_samples", "max_concurrent_trials", "seed", "max_failures"), (int,)),
    **dict.fromkeys(
        ("cpus_per_trial", "gpus_per_trial", "checkpoint_interval_s", "report_interval_s"), _NUMBER
    ),
    **dict.fromkeys(("download", "cache_teacher_logits"), (bool,)),
}
_RECIPE_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("optimizer", "schedule"), (str,)),
    **dict.fromkeys(("augment", "compile"), (bool,)),
}


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not a number."""
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def _parse_spec_value(key: str, value: Any) -> Any:
    """Type-check one spec entry and convert TOML lists/tables to the dataclass's types."""
    if key in _SPEC_TYPES:
        if not _is(value, _SPEC_TYPES[key]):
            names = " or ".join(t.__name__ for t in _SPEC_TYPES[key])
            raise ConfigError(f"{key}: must be {names}, got {value!r}")
        return value
    if key in ("recipe", "teacher_recipe"):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: must be a table with keys among {RECIPE_KEYS}")
        for recipe_key, recipe_value in value.items():
            if recipe_key not in RECIPE_KEYS:
                raise _unknown_key_error(str(recipe_key), RECIPE_KEYS, key)
            expected = _RECIPE_TYPES.get(recipe_key, _NUMBER)
            if not _is(recipe_value, expected):
                raise ConfigError(f"{key}.{recipe_key}: must be a {expected[0].__name__}, "
                                  f"got {recipe_value!r}")  # fmt: skip
        return Recipe(**value)
    if key == "methods":
        if not isinstance(value, (list, tuple)) or not all(isinstance(m, str) for m in value):
            raise ConfigError(f"methods: must be a list of method names, got {value!r}")
        return tuple(value)
    if key in ("seeds", "reseed"):
        if not isinstance(value, (list, tuple)) or not all(_is(v, (int,)) for v in value):
            raise ConfigError(f"{key}: must be a list of whole numbers, got {value!r}")
        return tuple(value)
    if key == "grid":
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(point, Mapping) and isinstance(point.get("method"), str) for point in value
        ):
            raise ConfigError(f'grid: must be a list of tables with a "method", got {value!r}')
        return tuple(dict(point) for point in value)
    if key == "objectives":
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(v, str) for v in pair)
            for pair in value
        ):
            raise ConfigError(
                f'objectives: must be a list of [metric, "max" | "min"], got {value!r}'
            )
        return tuple((metric, mode) for metric, mode in value)
    if not isinstance(value, Mapping):  # search and fixed
        raise ConfigError(f"{key}: must be a table of hyperparameter names, got {value!r}")
    if key == "search":
        for name, bounds in value.items():
            if (
                not isinstance(bounds, (list, tuple))
                or len(bounds) != 2
                or not all(_is(b, _NUMBER) for b in bounds)
            ):
                raise ConfigError(f"search.{name}: give [low, high], got {bounds!r}")
        return {name: (float(low), float(high)) for name, (low, high) in value.items()}
    return dict(value)
