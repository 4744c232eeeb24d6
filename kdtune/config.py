"""The study's vocabulary: frozen, validated configuration dataclasses (standard library only).

`from_dict` rejects unknown keys (with a "did you mean") and out-of-range values with one
`ConfigError` sentence that names the field and the fix. Name checks against the registries
(datasets, models, methods) are done by the caller, who passes the registries in, so this
module stays free of torch, Ray and MLflow.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdtune.hparams import Declarations


Log = Callable[[str], None]  # where a study's lines go (print, or a test's list)


class ConfigError(ValueError):
    """Bad user input: the message names the field and the fix."""


class StudyInterrupted(Exception):
    """The study stopped before every trial ended (Ctrl-C, SIGTERM): what finished is kept, and
    the same command with --resume continues it."""


class StudyFailed(Exception):
    """The study stopped on an error around its trials (a full disk, a store that went away):
    what Tune finished is kept, and once the cause is fixed --resume continues."""


def one_line(error: BaseException) -> str:
    """An exception as one readable line: its own cause (the "(sqlite3.OperationalError) ..."
    line of a database error, not the SQL around it), and what to do about a full disk."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith("Traceback"):  # an error carrying another's traceback
        lines = lines[-1:]
    cause = next((line for line in lines if line.startswith("(") and "Error)" in line), None)
    text = cause or f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    if getattr(error, "errno", None) == 28 or any(
        sign in str(error) for sign in ("No space left", "disk is full")
    ):  # fmt: skip
        text += " (the disk is full: free some space)"
    return text[:300]


def _unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1)
    # the whole list only while it reads as one line
    listed = ", ".join(sorted(valid)) if len(valid) <= 20 else "StudySpec's fields, each " \
        "described in kdtune/config.py"
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {listed}"
    return ConfigError(f"{where}: unknown key {_shown(key)}{hint}")


def _check_number(name: str, value: Any, *, positive: bool = False, whole: bool = False) -> None:
    """A recipe or spec number: finite, >= 0 (> 0 if `positive`), whole if `whole`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name}: must be a finite number, got {value!r}")
    if whole and (value != int(value) or value < 1):
        raise ConfigError(f"{name}: must be a whole number >= 1, got {value!r}")
    if (positive and value <= 0) or value < 0:
        raise ConfigError(f"{name}: must be {'> 0' if positive else '>= 0'}, got {value!r}")


def _check_choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(f"{name}: must be one of {list(options)}, got {value!r}")


AUTO_ON_OFF = ("auto", "on", "off")
MAX_NAME = 100
# a search's replicates: front_seeds - 1 more seeds for as many configurations as this share of
# its trials (`StudySpec.replicate_trials`)
REPLICATED_SHARE = 1 / 4


def _shown(value: Any, limit: int = 80) -> str:
    """repr of user input, cut short: an error line must stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Recipe:
    """How a network is trained; shared by teacher and student trainings."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05  # peak learning rate; SGD uses momentum 0.9
    optimizer: str = "sgd"  # "sgd" or "adamw"
    # "cosine" (to 0 over the epochs) or "step" (x0.1 at 5/8, 3/4 and 7/8 of the epochs: the
    # CIFAR-100 KD benchmark's 150, 180 and 210 of 240)
    schedule: str = "cosine"
    weight_decay: float = 5e-4
    # the dataset's random training augmentation (crop, flip); off keeps every epoch's inputs
    # identical, which is what caching the teacher's logits needs
    augment: bool = True
    # torch.compile the networks (worth it on GPUs for long trainings: the first epoch pays the
    # compilation, later trials on the node reuse inductor's on-disk cache)
    compile: bool = False
    # The fast path's three switches; "auto" turns each on where it pays (CUDA) and off elsewhere.
    # Each runs on CPU too, which is how the tests exercise the GPU's code paths.
    precision: str = "auto"  # "bf16": networks under bf16 autocast; "fp32"; losses stay fp32
    channels_last: str = "auto"  # "on": NHWC weights, what tensor-core convolutions want
    fused_optimizer: str = "auto"  # "on": one kernel updates every parameter

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            _check_number(name, getattr(self, name), whole=True)
        _check_number("lr", self.lr, positive=True)
        _check_number("weight_decay", self.weight_decay)
        for name in ("augment", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: must be true or false, got {getattr(self, name)!r}")
        _check_choice("optimizer", self.optimizer, ("sgd", "adamw"))
        _check_choice("schedule", self.schedule, ("cosine", "step"))
        _check_choice("precision", self.precision, ("auto", "fp32", "bf16"))
        _check_choice("channels_last", self.channels_last, AUTO_ON_OFF)
        _check_choice("fused_optimizer", self.fused_optimizer, AUTO_ON_OFF)


RECIPE_KEYS = [f.name for f in fields(Recipe)]

# What a study's numbers mean. "search": a validation split is held out of the training set,
# objectives and early stopping read it, nothing is selected on test. "cifar_benchmark": the
# CIFAR-100 KD tables' protocol (mdistiller, RepDistiller, CRLD, Good-DA-in-KD): all training
# images trained on, the last epoch's test accuracy reported (and, named as selected on the test
# set, the best epoch's), with `benchmark_recipe`.
PROTOCOLS = ("search", "cifar_benchmark")
# The choices of each kind of search component, one table each: the CLI's choices and help and
# the spec's validation read them; search.SAMPLER_FACTORIES and importance.EVALUATOR_FACTORIES
# build them by the same names (a contract test keeps the keys equal).
SAMPLERS = {
    "tpe": "tree-structured Parzen estimator (Optuna's default; handles each method's own space)",
    "gp": "Gaussian process (models the parameters all trials share; the rest are random)",
    "nsga2": "NSGA-II, a genetic algorithm (generations of a few trials each)",
}
SCHEDULERS = {
    "auto": "moasha for a search, fifo for a grid",
    "moasha": "stops trials that rank low at rung epochs",
    "fifo": "runs each trial to its budget",
}
IMPORTANCE_EVALUATORS = {
    "fanova": "fANOVA: a random forest's variance decomposition, per method",
    "ped_anova": "PED-ANOVA: the top trials' density against all, the whole study at once",
}
SMALL_LR_STUDENTS = ("MobileNetV2", "ShuffleV1", "ShuffleV2")  # the benchmark trains them at 0.01


def benchmark_recipe(model: str) -> Recipe:
    """The benchmark's training of `model`: 240 epochs of SGD (momentum 0.9), LR 0.05 (0.01
    for MobileNetV2 and ShuffleNets), weight decay 5e-4, batch 64, x0.1 at 150, 180 and 210."""
    return Recipe(epochs=240, batch_size=64, lr=0.01 if model in SMALL_LR_STUDENTS else 0.05,
                  optimizer="sgd", schedule="step", weight_decay=5e-4)  # fmt: skip


def benchmark_recipes(student: str, teacher: str) -> dict[str, Recipe]:
    """The cifar_benchmark protocol's preset, by the spec's field: what a spec file or the flags
    say of `recipe` and `teacher_recipe` applies over these."""
    return {"recipe": benchmark_recipe(student), "teacher_recipe": benchmark_recipe(teacher)}


@dataclass(frozen=True)
class TrialConfig:
    """One trial, resolved: a method with every hyperparameter it declares (typed by its
    declaration), the training recipe and the seed."""

    method: str
    params: Mapping[str, Any]
    recipe: Recipe
    seed: int = 0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], declarations: Declarations) -> TrialConfig:
        """Parse a flat trial dict (what Ray Tune hands a trial); missing hyperparameters take
        their method's defaults. `declarations`: method -> its hyperparameter declarations."""
        method = raw.get("method")
        if method not in declarations:
            raise ConfigError(f"method: unknown {method!r}; choose one of {sorted(declarations)}")
        hparams = {h.name: h for h in declarations[method]}
        params = {name: h.default for name, h in hparams.items()}
        recipe_values: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("method", "seed"):
                continue
            if key in RECIPE_KEYS:
                recipe_values[key] = value
            elif key in hparams:
                params[key] = hparams[key].parse(value)
            else:
                valid = ["method", "seed", *RECIPE_KEYS, *hparams]
                raise _unknown_key_error(key, valid, f"trial config for method {method!r}")
        seed = raw.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: must be a whole number >= 0, got {seed!r}")
        return cls(method=method, params=params, recipe=Recipe(**recipe_values), seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """Flat and complete: what a trial records as its configuration."""
        return {"method": self.method, "seed": self.seed, **dataclasses.asdict(self.recipe),
                **self.params}  # fmt: skip


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
    # Search ranges that override the methods' declared ones: {"temperature": (1.0, 16.0)};
    # "lskd.w_kd" scopes a range to one method. Equal ends hold the value fixed.
    search: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    # Hyperparameters held fixed instead of searched: {"w_ce": 0.0}, or {"dkd.w_nckd": 6.0}.
    fixed: Mapping[str, Any] = field(default_factory=dict)
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
    # A search's front measured over seeds: after its num_samples trials, each configuration on
    # the front or within noise of it runs again with seeds seed + 1, seed + 2, ..., up to this
    # many seeds in all, until it is clearly on the front or clearly behind it (racing,
    # kdtune/replicates.py); the front is then that of the seed means. At most
    # `replicate_trials` such trials. 1 = off; a grid repeats its points over `seeds` instead.
    front_seeds: int = 3
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)
    teacher_recipe: Recipe = field(default_factory=lambda: Recipe(epochs=30))
    # A trained `teacher` to use instead of training one (teacher_recipe is then unused): a
    # state dict file, mdistiller's and RepDistiller's published {"model": ...} files included.
    # Its SHA-256 is recorded on the study's parent run.
    teacher_checkpoint: str = ""
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
    # Early stopping: "moasha" (multi-objective asynchronous successive halving,
    # kdtune/scheduler.py), "fifo" (every trial runs its whole budget), or "auto": moasha for a
    # search, fifo for a grid (which compares every point at its full budget).
    scheduler: str = "auto"
    # epochs before the first rung; 0 = budget / reduction_factor^2 (a ninth of it by default)
    grace_period: int = 0
    reduction_factor: float = 3.0  # each rung lets on the best 1/reduction_factor of its trials
    sampler: str = "tpe"  # Optuna's sampler: "tpe", "gp" (Gaussian process) or "nsga2"
    # What ranks the hyperparameters after a search: "fanova" (per method) or "ped_anova",
    # Optuna's; fanova found a planted one 82-97% of the time, PED-ANOVA 72-80%
    # (bench/importance.py)
    importance_evaluator: str = "fanova"
    # Where the Optuna study lives (any SQLAlchemy URL); "" = optuna.db in the study folder
    optuna_storage: str = ""
    # The hypervolume's reference point, one value per objective; () = each objective's worst
    # value where it has one (accuracy 0, a calibration error 1), else the worst seen x 1.1
    reference_point: tuple[float, ...] = ()
    # "search" or "cifar_benchmark" (PROTOCOLS above); in a spec file or with --protocol, the
    # benchmark's protocol also makes `benchmark_recipe` the recipes' defaults
    protocol: str = "search"
    # A learning-curve blackbox (bench/blackbox.py) to replay instead of training: every trial
    # reports the curve measured for its configuration, one epoch per `simulate_epoch_s`, and no
    # data, teacher or GPU is touched ("" = train for real). A test of a study's set-up.
    simulate: str = ""
    simulate_epoch_s: float = 0.1  # the sleep that stands for one simulated epoch

    def __post_init__(self) -> None:
        if self.name in ("", ".", "..") or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"name: use letters, digits, '-', '_' or '.' (not '.' or '..'), "
                              f"got {_shown(self.name)}")  # fmt: skip
        if len(self.name) > MAX_NAME:  # it names a folder and an MLflow experiment
            raise ConfigError(f"name: at most {MAX_NAME} characters, got {len(self.name)}")
        if not self.methods:
            raise ConfigError("methods: list at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods: list each method once, got {list(self.methods)}")
        for name in ("num_samples", "max_concurrent_trials", "front_seeds"):
            _check_number(name, getattr(self, name), whole=True)
        _check_number("cpus_per_trial", self.cpus_per_trial, positive=True)
        for name in ("gpus_per_trial", "checkpoint_interval_s", "report_interval_s",
                     "max_failures", "seed", "simulate_epoch_s"):  # fmt: skip
            _check_number(name, getattr(self, name))
        self._check_objectives()
        self._check_grid()
        self._check_search_options()
        for name, bounds in self.search.items():
            if len(bounds) != 2 or not bounds[0] <= bounds[1]:
                raise ConfigError(
                    f"search.{name}: give (low, high) with low <= high, got {bounds!r}"
                )

    def _check_objectives(self) -> None:
        if not self.objectives:
            raise ConfigError("objectives: give at least one METRIC:max|min")
        for metric, mode in self.objectives:
            if mode not in ("max", "min"):
                raise ConfigError(
                    f"objectives: mode of {metric!r} must be 'max' or 'min', got {mode!r}"
                )
        metrics = [metric for metric, _ in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ConfigError(f"objectives: name each metric once, got {metrics}")

    def _check_search_options(self) -> None:
        _check_choice("protocol", self.protocol, PROTOCOLS)
        _check_choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        if self.protocol == "cifar_benchmark":
            self._check_benchmark_protocol()
        if self.scheduler == "moasha" and self.grid:
            raise ConfigError("scheduler: a grid study compares every point at its full budget; "
                              "use fifo (or auto), or search instead of a grid")  # fmt: skip
        if isinstance(self.grace_period, bool) or not isinstance(self.grace_period, int) or (
            self.grace_period < 0
        ):  # fmt: skip
            raise ConfigError(f"grace_period: must be a whole number of epochs >= 0 (0 = auto), "
                              f"got {self.grace_period!r}")  # fmt: skip
        if not _is(self.reduction_factor, _NUMBER) or not math.isfinite(self.reduction_factor) or (
            self.reduction_factor <= 1
        ):
            raise ConfigError(f"reduction_factor: must be > 1 (a rung keeps 1/reduction_factor "
                              f"of its trials), got {self.reduction_factor}")  # fmt: skip
        _check_choice("sampler", self.sampler, tuple(SAMPLERS))
        _check_choice("importance_evaluator", self.importance_evaluator,
                      tuple(IMPORTANCE_EVALUATORS))  # fmt: skip
        if self.reference_point and len(self.reference_point) != len(self.objectives):
            raise ConfigError(f"reference_point: give one value per objective "
                              f"({len(self.objectives)}), got {list(self.reference_point)}")
        for value in self.reference_point:
            _check_number("reference_point", value)

    def _check_benchmark_protocol(self) -> None:
        """No validation split: objectives on test, read once at the end, nothing stopped early
        on them (that would select on the test set)."""
        for metric, _ in self.objectives:
            if not metric.startswith("test_") or metric.endswith("_ts"):
                raise ConfigError(f"objectives: {metric} needs a validation split, which the "
                                  "cifar_benchmark protocol trains on; use test_* objectives "
                                  "(e.g. test_acc:max, the benchmark's last-epoch accuracy)")
        if self.scheduler == "moasha":
            raise ConfigError("scheduler: MO-ASHA would stop trials on test metrics under the "
                              "cifar_benchmark protocol; use fifo (or auto)")  # fmt: skip

    @property
    def early_stopping(self) -> bool:
        """Whether trials are judged at rungs (MO-ASHA): asked, or a search under the search
        protocol."""
        auto = not self.grid and self.protocol == "search"
        return self.scheduler == "moasha" or (self.scheduler == "auto" and auto)

    def _check_grid(self) -> None:
        if self.seeds and not self.grid:
            raise ConfigError("seeds: repeated seeds need a grid of points; "
                              "give `grid` or leave `seeds` empty")  # fmt: skip
        for name in ("seeds", "reseed"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ConfigError(f"{name}: list each seed once, got {list(values)}")
        replicated = set(range(self.seed + 1, self.seed + self.front_seeds)) & set(self.reseed)
        if replicated and not self.grid:
            raise ConfigError(f"reseed: seeds {sorted(replicated)} are the search's own "
                              f"replicates of its front (seed + 1 .. seed + front_seeds - 1); "
                              f"give seeds from {self.seed + self.front_seeds} on")  # fmt: skip
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

    @property
    def replicate_trials(self) -> int:
        """The most trials a search adds to measure its front over seeds: front_seeds - 1 more
        seeds for as many configurations as a REPLICATED_SHARE of its trials (0 for a grid)."""
        if self.grid or self.front_seeds <= 1:
            return 0
        return (self.front_seeds - 1) * max(1, math.ceil(self.num_samples * REPLICATED_SHARE))

    @property
    def most_trials(self) -> int:
        """What Tune may run: the study's trials and the replicates."""
        return self.trial_count + self.replicate_trials

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
        if values.get("protocol") == "cifar_benchmark":  # the preset, under what the file says
            models = {f.name: values.get(f.name, f.default) for f in fields(cls)
                      if f.name in ("student", "teacher")}  # fmt: skip
            for key, base in benchmark_recipes(**models).items():
                values[key] = dataclasses.replace(base, **raw.get(key, {}))
        return cls(**values)


# What a resumed study keeps from its first launch: Tune restores its own settings as saved,
# and the earlier trials were drawn, trained and judged under the rest.
KEPT_ON_RESUME = ("num_samples", "max_concurrent_trials", "front_seeds")
FREE_ON_RESUME = ("name", "storage_path", "data_root", "download", "cpus_per_trial",
                  "gpus_per_trial", "max_failures", "checkpoint_interval_s",
                  "report_interval_s", "importance_evaluator", "reseed",
                  "simulate_epoch_s")  # fmt: skip

# how a study begun before a field existed ran, where that is not the field's default
BEFORE_IT_EXISTED = {"front_seeds": 1}


def spec_record(spec: StudySpec) -> dict[str, Any]:
    """The spec as plain JSON data (what the study folder keeps of its first launch)."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


def resume_changes(saved: Mapping[str, Any],
                   spec: StudySpec) -> tuple[list[str], dict[str, Any]]:  # fmt: skip
    """What a resume changes of the spec its study began with: (the changes it cannot make,
    "field: first -> now", and the first launch's values of the settings it keeps although
    asked for others)."""
    now = spec_record(spec)
    # a field that the first launch's record lacks came with a later kdtune: it ran at its
    # default, or as it worked before the field existed
    saved = {**spec_record(StudySpec()), **BEFORE_IT_EXISTED, **saved}
    changed = [key for key in now if key not in FREE_ON_RESUME and saved.get(key) != now[key]]
    refused = [change for key in changed if key not in KEPT_ON_RESUME
               for change in _changes(key, saved.get(key), now[key])]  # fmt: skip
    return refused, {key: saved[key] for key in changed if key in KEPT_ON_RESUME}


def _changes(key: str, before: Any, after: Any) -> list[str]:
    """`key`'s change as "key: before -> after"; a recipe's field by field."""
    if isinstance(before, dict) and isinstance(after, dict) and key.endswith("recipe"):
        return [f"{key}.{name}: {before.get(name)!r} -> {after.get(name)!r}"
                for name in after if before.get(name) != after.get(name)]  # fmt: skip
    return [f"{key}: {before!r} -> {after!r}"]


_NUMBER = (int, float)
_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("name", "dataset", "data_root", "teacher", "student", "storage_path",
                     "scheduler", "sampler", "optuna_storage", "importance_evaluator",
                     "protocol", "teacher_checkpoint", "simulate"), (str,)),
    **dict.fromkeys(("num_samples", "max_concurrent_trials", "seed", "max_failures",
                     "grace_period"), (int,)),
    **dict.fromkeys(("cpus_per_trial", "gpus_per_trial", "checkpoint_interval_s",
                     "report_interval_s", "reduction_factor", "simulate_epoch_s"), _NUMBER),
    **dict.fromkeys(("download", "cache_teacher_logits"), (bool,)),
}
_RECIPE_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("optimizer", "schedule", "precision", "channels_last", "fused_optimizer"),
                    (str,)),
    **dict.fromkeys(("augment", "compile"), (bool,)),
}


def _is(value: Any, kinds: tuple[type, ...]) -> bool:
    """isinstance, except that a bool is not a number."""
    return isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)


def _parse_recipe(key: str, value: Any) -> Recipe:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a table with keys among {RECIPE_KEYS}")
    for recipe_key, recipe_value in value.items():
        if recipe_key not in RECIPE_KEYS:
            raise _unknown_key_error(str(recipe_key), RECIPE_KEYS, key)
        expected = _RECIPE_TYPES.get(recipe_key, _NUMBER)
        if not _is(recipe_value, expected):
            raise ConfigError(f"{key}.{recipe_key}: must be a {expected[0].__name__}, "
                              f"got {_shown(recipe_value)}")  # fmt: skip
    return Recipe(**value)


def _parse_spec_value(key: str, value: Any) -> Any:
    """Type-check one spec entry and convert TOML lists/tables to the dataclass's types."""
    if key in _SPEC_TYPES:
        if not _is(value, _SPEC_TYPES[key]):
            names = " or ".join(t.__name__ for t in _SPEC_TYPES[key])
            raise ConfigError(f"{key}: must be {names}, got {value!r}")
        return value
    if key in ("recipe", "teacher_recipe"):
        return _parse_recipe(key, value)
    if key == "methods":
        if not isinstance(value, (list, tuple)) or not all(isinstance(m, str) for m in value):
            raise ConfigError(f"methods: must be a list of method names, got {value!r}")
        return tuple(value)
    if key in ("seeds", "reseed"):
        if not isinstance(value, (list, tuple)) or not all(_is(v, (int,)) for v in value):
            raise ConfigError(f"{key}: must be a list of whole numbers, got {_shown(value)}")
        return tuple(value)
    if key == "reference_point":
        if not isinstance(value, (list, tuple)) or not all(_is(v, _NUMBER) for v in value):
            raise ConfigError(f"reference_point: must be a list of numbers, got {_shown(value)}")
        return tuple(float(v) for v in value)
    if key == "grid":
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(point, Mapping) and isinstance(point.get("method"), str) for point in value
        ):
            raise ConfigError(f'grid: must be a list of tables with a "method", got {value!r}')
        return tuple(dict(point) for point in value)
    if key == "objectives":
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(pair, (list, tuple)) and len(pair) == 2
            and all(isinstance(v, str) for v in pair) for pair in value
        ):  # fmt: skip
            raise ConfigError(f'objectives: must be a list of [metric, "max" | "min"], '
                              f"got {_shown(value)}")  # fmt: skip
        return tuple((metric, mode) for metric, mode in value)
    if not isinstance(value, Mapping):  # search and fixed
        raise ConfigError(f"{key}: must be a table of hyperparameter names, got {value!r}")
    if key == "search":
        for name, bounds in value.items():
            if not isinstance(bounds, (list, tuple)) or len(bounds) != 2 or not all(
                _is(b, _NUMBER) for b in bounds
            ):
                raise ConfigError(f"search.{name}: give [low, high], got {_shown(bounds)}")
        return {name: (float(low), float(high)) for name, (low, high) in value.items()}
    return dict(value)
