"""Hyperparameter declarations: the one place a hyperparameter's type, ranges and meaning live.

Each method declares what it takes (kdtune/methods.py), one `HParam` per hyperparameter, beside
its step. Everything else derives from these declarations: validation of trial configs, grid
points and spec values; the Optuna search space; CLI help; the printed columns; the contract
tests; the README's method table. Standard library only.

A name has one meaning, one type, one valid range and one scale (log or linear) in every method
that takes it; methods differ only in the default, its source and the search range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kdtune.config import ConfigError

Value = float | int | bool | str
KINDS = (float, int, bool, str)
# What the training loop and the figures read of a hyperparameter beyond its value, declared
# with it, so that they find it by what it does, never by its name:
RAMP_EPOCHS = "ramp_epochs"  # the distillation terms are scaled by min(1, epoch / value)
KD_TEMPERATURE = "kd_temperature"  # the distillation terms' softmax temperature (figures)
ROLES = (RAMP_EPOCHS, KD_TEMPERATURE)


@dataclass(frozen=True)
class HParam:
    name: str
    kind: type  # float, int, bool or str
    default: Value
    meaning: str  # one line: what it does, in the words of the method's paper
    source: str = ""  # where the default comes from
    low: float | None = None  # valid numbers: low <= v (low < v if low_open) and v <= high
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()  # valid values of a text hyperparameter
    # searched by default: (low, high) for numbers, the values to try for text or switches;
    # None = held at its default unless a study searches it
    search: tuple[Any, ...] | None = None
    log: bool = False  # search a number on a log scale
    role: str = ""  # one of ROLES, or none

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TypeError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.role and self.role not in ROLES:
            raise TypeError(f"{self.name}: role must be one of {ROLES}, got {self.role!r}")
        self.parse(self.default)
        if self.search is not None and self.kind in (float, int):
            low, high = self.search
            self.parse(low), self.parse(high)

    def at(self, default: Value, source: str, **changes: Any) -> HParam:
        """The same hyperparameter with a method's own default (and search range)."""
        return dataclasses.replace(self, default=default, source=source, **changes)

    @property
    def searched(self) -> bool:
        return self.search is not None

    def valid_text(self) -> str:
        """The valid values in words, as error messages and the method table say them."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "one of " + ", ".join(self.choices)
        whole = "a whole number " if self.kind is int else ""
        if self.low is not None and self.high is not None:
            return f"{whole}in [{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{whole}{'>' if self.low_open else '>='} {self.low:g}"
        return f"{whole or 'a number '}".strip()

    def parse(self, value: Any, field: str = "") -> Value:
        """`value` as this hyperparameter's type, or a ConfigError naming the field (`field`, by
        default the name) and the fix."""
        field = field or self.name
        if self.kind is str:
            if value not in self.choices:
                raise ConfigError(f"{field}: must be {self.valid_text()}, got {value!r}")
            return str(value)
        if self.kind is bool:
            if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
                return bool(value)
            raise ConfigError(f"{field}: is a switch: must be true or false, got {value!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value
        ):
            valid = self.valid_text()  # "> 0" alone reads as a comparison, not a kind of value
            shown = valid if "number" in valid else f"a number {valid}"
            raise ConfigError(f"{field}: must be {shown}, got {value!r}")
        if self.kind is int and value != int(value):
            raise ConfigError(f"{field}: must be {self.valid_text()}, got {value!r}")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and value > self.high
        if below or above:
            raise ConfigError(f"{field}: must be {self.valid_text()}, got {value!r}")
        return self.kind(value)

    def search_text(self) -> str:
        if self.search is None:
            return "-"
        if self.kind in (float, int):
            low, high = self.search
            return f"[{low:g}, {high:g}]{' log' if self.log else ''}"
        return " / ".join(str(v).lower() if self.kind is bool else str(v) for v in self.search)


Declarations = Mapping[str, Sequence[HParam]]  # method -> the hyperparameters it takes


def with_role(hparams: Sequence[HParam], role: str) -> HParam | None:
    """The hyperparameter of a method that plays `role` (ROLES), if it declares one."""
    return next((h for h in hparams if h.role == role), None)


def by_name(declarations: Declarations) -> dict[str, list[tuple[str, HParam]]]:
    """Every declared name with the (method, declaration) pairs that take it."""
    names: dict[str, list[tuple[str, HParam]]] = {}
    for method, hparams in declarations.items():
        for hparam in hparams:
            names.setdefault(hparam.name, []).append((method, hparam))
    return names


def scoped(values: Mapping[str, Any], method: str, name: str) -> Any:
    """A study's value for `name` in `method`: "method.name" wins over a plain "name"."""
    return values.get(f"{method}.{name}", values.get(name))


def format_value(value: Any) -> str:
    """A value as people read it: 4 not 4.0 where whole, true/false, lists comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value == value else "nan"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)
