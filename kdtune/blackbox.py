"""A learning-curve blackbox of real KD runs: look up what a configuration would have measured.

`bench/blackbox.py` trains Sobol points of a study's space (each method's searched
hyperparameters over their search ranges) with several trial seeds and keeps every epoch's
metrics in one Parquet file, one row per (method, config, seed, epoch); the file's schema
metadata holds the recipe, including each method's searched ranges and scales, so this module
needs no method declarations (numpy and pyarrow only).

A query (a method and its hyperparameter values) is placed in that method's normalised space:
each searched hyperparameter scaled to [0, 1] over its search range, on a log scale where the
method declares one, so that T = 2 -> 4 is as far as 8 -> 16. Only configurations of the same
method are ever consulted. The query gets:
- `curve`: the measured curves of ONE seed (drawn with the caller's rng) of the nearest measured
  configuration, every metric per epoch: real values, with real seed noise, as a tabular
  benchmark returns them;
- `true_curve`: the configuration's expected value, the seed mean per epoch as the surrogate
  predicts it from the seed means of measured configurations (`Surrogate`: k nearest neighbours
  weighted by inverse distance, or a Gaussian kernel smoother over all of them). At a measured
  configuration the nearest-neighbour surrogate returns that configuration's own seed mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kdtune.config import ConfigError

# the blackbox kdtune ships (the default study's space), beside the code, whatever the cwd
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "bench" / "blackbox" / "digits.parquet"
METADATA_KEY = b"kdtune.blackbox"  # the recipe, as JSON, in the Parquet schema's metadata
KEYS = ("method", "config", "seed", "epoch")
# what makes a run complete: the metric every epoch reports
PRESENT = "val_acc"


@dataclass(frozen=True)
class Axis:
    """One searched hyperparameter of a method, as the blackbox sampled it."""

    name: str
    low: float
    high: float
    log: bool = False

    def to_unit(self, values: np.ndarray | float) -> np.ndarray:
        """Values scaled to [0, 1] over the search range, in log space where declared."""
        values = np.asarray(values, dtype=float)
        if self.log:
            low, high = math.log(self.low), math.log(self.high)
            return (np.log(values) - low) / (high - low)
        return (values - self.low) / (self.high - self.low)

    def from_unit(self, unit: np.ndarray | float) -> np.ndarray:
        unit = np.asarray(unit, dtype=float)
        if self.log:
            return np.exp(math.log(self.low) + unit * (math.log(self.high) - math.log(self.low)))
        return self.low + unit * (self.high - self.low)


@dataclass(frozen=True)
class Surrogate:
    """How a configuration's seed mean is predicted from measured configurations' seed means."""

    kind: str = "idw"  # "idw": the k nearest, weights 1 / distance^power; "kernel": all, Gaussian
    k: int = 8
    power: float = 2.0
    bandwidth: float = 0.15  # the kernel's standard deviation, in normalised units

    def __post_init__(self) -> None:
        if self.kind not in ("idw", "kernel"):
            raise ConfigError(f"surrogate.kind: must be idw or kernel, got {self.kind!r}")
        if self.k < 1 or self.bandwidth <= 0:
            raise ConfigError(f"surrogate: k must be >= 1 and bandwidth > 0, got {self}")

    def label(self) -> str:
        if self.kind == "idw":
            return f"idw k={self.k} power={self.power:g}"
        return f"kernel bandwidth={self.bandwidth:g}"


def weights(distances: np.ndarray, surrogate: Surrogate) -> np.ndarray:
    """Each measured configuration's weight in a prediction (they sum to 1). A query that is a
    measured configuration gets that configuration alone: it was measured, nothing to guess."""
    exact = distances == 0
    if exact.any():
        return exact / exact.sum()
    if surrogate.kind == "kernel":
        # shifted by the nearest distance, so that far queries do not underflow to all zeros
        logits = -(distances**2 - distances.min() ** 2) / (2 * surrogate.bandwidth**2)
        raw = np.exp(logits)
    else:
        raw = np.zeros_like(distances)
        nearest = np.argsort(distances, kind="stable")[: surrogate.k]
        raw[nearest] = distances[nearest] ** -surrogate.power
    return raw / raw.sum()


@dataclass(frozen=True)
class MethodTable:
    """One method's measured runs: curves[metric][config, seed, epoch - 1]."""

    axes: tuple[Axis, ...]
    constants: Mapping[str, Any]  # what the method's other hyperparameters were held at
    configs: np.ndarray  # config ids, [n]
    values: np.ndarray  # hyperparameter values, [n, len(axes)]
    seeds: np.ndarray  # [s]
    curves: Mapping[str, np.ndarray]  # NaN at epochs where a metric is not reported

    @property
    def unit(self) -> np.ndarray:
        return np.stack([axis.to_unit(self.values[:, i]) for i, axis in enumerate(self.axes)], 1)

    def seed_means(self) -> dict[str, np.ndarray]:
        """metric -> [config, epoch], the mean over seeds."""
        return {name: curve.mean(axis=1) for name, curve in self.curves.items()}


def predict_means(
    unit: np.ndarray, means: Mapping[str, np.ndarray], points: np.ndarray, surrogate: Surrogate
) -> dict[str, np.ndarray]:
    """The surrogate's seed means at `points` ([m, d], normalised) from measured configurations
    at `unit` ([n, d]) with seed means `means` (metric -> [n, epochs]): metric -> [m, epochs]."""
    w = np.stack([weights(np.linalg.norm(unit - p, axis=1), surrogate) for p in points])
    # a metric absent at an epoch (NaN: reported only at the last) stays absent
    return {name: w @ np.nan_to_num(mean) + np.where(np.isnan(mean).all(0), np.nan, 0.0)
            for name, mean in means.items()}  # fmt: skip


def holdout_predictions(
    table: MethodTable, metric: str, surrogate: Surrogate, folds: int, rng: np.random.Generator,
    epoch: int = -1,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Cross-validated fidelity: every configuration's seed mean of `metric` at `epoch` (the
    last by default) as the surrogate predicts it from the other folds' configurations, and as
    measured. Returns (predicted, measured), one entry per configuration (none with fewer than
    two configurations: nothing to predict from)."""
    n = len(table.configs)
    if n < 2:
        return np.empty(0), np.empty(0)
    fold = rng.permutation(n) % min(folds, n)
    unit, means = table.unit, {metric: table.seed_means()[metric]}
    predicted = np.empty(n)
    for k in range(min(folds, n)):
        held = fold == k
        found = predict_means(unit[~held], {metric: means[metric][~held]}, unit[held], surrogate)
        predicted[held] = found[metric][:, epoch]
    return predicted, means[metric][:, epoch]


@dataclass(frozen=True)
class Lookup:
    """What the blackbox answers for one query."""

    method: str
    config: int  # the nearest measured configuration's id
    values: dict[str, float]  # its hyperparameters
    distance: float  # from the query, normalised units
    seed: int  # whose curves `curve` holds
    curve: dict[str, np.ndarray]  # measured, one seed, per epoch (index 0 = epoch 1)
    true_curve: dict[str, np.ndarray]  # the surrogate's seed mean per epoch

    @property
    def true_final(self) -> dict[str, float]:
        """The surrogate's seed mean at the last epoch."""
        return {name: float(values[-1]) for name, values in self.true_curve.items()}


def read_recipe(path: str | Path) -> dict[str, Any]:
    metadata = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in metadata:
        raise ConfigError(f"{path}: not a kdtune blackbox (no {METADATA_KEY.decode()} metadata)")
    return json.loads(metadata[METADATA_KEY])


def method_tables(table: pa.Table, recipe: Mapping[str, Any]) -> dict[str, MethodTable]:
    """The runs grouped by method. A configuration counts once every seed the file holds for
    its method has all its epochs and finite values at the last (a build in progress, or a
    training that diverged, leaves it out)."""
    epochs = int(recipe["epochs"])
    names = {axis["name"] for axes in recipe["space"].values() for axis in axes}
    metrics = [c for c in table.column_names if c not in KEYS and c not in names]
    method_column = np.asarray(table.column("method").to_pylist(), dtype=object)
    tables = {}
    for method, declared in recipe["space"].items():
        rows = table.filter(pa.array(method_column == method))
        if rows.num_rows == 0:
            continue
        axes = tuple(Axis(a["name"], a["low"], a["high"], a["log"]) for a in declared)
        config, seed, epoch = (rows.column(k).to_numpy() for k in ("config", "seed", "epoch"))
        configs, ci = np.unique(config, return_inverse=True)
        seeds, si = np.unique(seed, return_inverse=True)
        shape = (len(configs), len(seeds), epochs)
        curves = {}
        for name in metrics:
            curve = np.full(shape, np.nan)
            curve[ci, si, epoch - 1] = rows.column(name).to_numpy(zero_copy_only=False)
            curves[name] = curve
        present = curves[PRESENT]
        keep = ~np.isnan(present).any(axis=(1, 2)) & np.isfinite(present[:, :, -1]).all(1)
        values = np.full((len(configs), len(axes)), np.nan)
        for i, axis in enumerate(axes):
            values[ci, i] = rows.column(axis.name).to_numpy(zero_copy_only=False)
        tables[method] = MethodTable(axes, recipe["constants"].get(method, {}), configs[keep],
                                     values[keep], seeds, {k: v[keep] for k, v in curves.items()})
    return tables


def _point(method: str, table: MethodTable, query: Mapping[str, Any]) -> np.ndarray:
    """The query in the method's normalised space, or a ConfigError naming the field."""
    searched = {axis.name: axis for axis in table.axes}
    for key, value in query.items():
        if key in searched:
            continue
        if key not in table.constants:
            raise ConfigError(f"{method}.{key}: not covered by the blackbox, which varies "
                              f"{', '.join(searched)} and holds "
                              f"{', '.join(table.constants) or 'nothing else'} fixed")  # fmt: skip
        if value != table.constants[key]:
            raise ConfigError(f"{method}.{key}: the blackbox measured only "
                              f"{table.constants[key]!r}, got {value!r}")  # fmt: skip
    unit = []
    for name, axis in searched.items():
        if name not in query:
            raise ConfigError(f"{method}.{name}: missing; a query gives every hyperparameter "
                              f"the blackbox varies ({', '.join(searched)})")  # fmt: skip
        value = query[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            axis.low <= value <= axis.high
        ):
            raise ConfigError(f"{method}.{name}: must be a number in the measured range "
                              f"[{axis.low:g}, {axis.high:g}], got {value!r}")  # fmt: skip
        unit.append(float(axis.to_unit(value)))
    return np.array(unit)


class Blackbox:
    """A study's measured learning curves, queried by configuration."""

    def __init__(self, recipe: Mapping[str, Any], tables: Mapping[str, MethodTable],
                 surrogate: Surrogate = Surrogate()) -> None:  # fmt: skip
        self.recipe, self.tables, self.surrogate = dict(recipe), dict(tables), surrogate
        self._units = {m: t.unit for m, t in self.tables.items()}
        self._means = {m: t.seed_means() for m, t in self.tables.items()}

    @classmethod
    def load(cls, path: str | Path, surrogate: Surrogate = Surrogate()) -> Blackbox:
        recipe = read_recipe(path)
        return cls(recipe, method_tables(pq.read_table(path), recipe), surrogate)

    @property
    def methods(self) -> list[str]:
        return sorted(self.tables)

    @property
    def metrics(self) -> list[str]:
        return sorted(next(iter(self.tables.values())).curves) if self.tables else []

    def table(self, method: str) -> MethodTable:
        if method not in self.tables:
            raise ConfigError(f"method: the blackbox covers {', '.join(self.methods)}, "
                              f"not {method!r}")  # fmt: skip
        return self.tables[method]

    def true_curve(self, method: str, query: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The surrogate's seed mean of every metric per epoch at `query`."""
        point = _point(method, self.table(method), query)
        found = predict_means(self._units[method], self._means[method], point[None],
                              self.surrogate)  # fmt: skip
        return {name: values[0] for name, values in found.items()}

    def query(self, method: str, query: Mapping[str, Any],
              seed: np.random.Generator | int) -> Lookup:  # fmt: skip
        """The nearest measured configuration's curves of one measured seed: drawn by a
        generator, or the measured seeds taken in turn by a trial seed (seeds s, s + 1, s + 2
        replay different ones, as replicates of a configuration train different seeds)."""
        table = self.table(method)
        point = _point(method, table, query)
        distances = np.linalg.norm(self._units[method] - point, axis=1)
        nearest = int(np.argmin(distances))
        s = (seed if isinstance(seed, int) else int(seed.integers(1 << 31))) % len(table.seeds)
        return Lookup(
            method=method, config=int(table.configs[nearest]),
            values={a.name: float(table.values[nearest, i]) for i, a in enumerate(table.axes)},
            distance=float(distances[nearest]), seed=int(table.seeds[s]),
            curve={name: curve[nearest, s].copy() for name, curve in table.curves.items()},
            true_curve=self.true_curve(method, query),
        )  # fmt: skip

