"""Pareto fronts over several objectives, each maximised or minimised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Direction = str  # "max" or "min"


def _as_minimisation(points: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[1] != len(directions):
        raise ValueError(
            f"points must have shape (n, {len(directions)}) to match directions, got {points.shape}"
        )
    bad = [d for d in directions if d not in ("max", "min")]
    if bad:
        raise ValueError(f"directions must be 'max' or 'min', got {bad}")
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return points * signs


def pareto_front(points: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Boolean mask of the non-dominated rows.

    Row a dominates row b when a is no worse in every objective and strictly better in one.
    Rows with a NaN objective are never on the front. Duplicated optimal rows are all kept.
    """
    costs = _as_minimisation(points, directions)
    finite = np.isfinite(costs).all(axis=1)
    on_front = finite.copy()
    for i in np.flatnonzero(finite):
        others = costs[finite]
        dominated = (others <= costs[i]).all(axis=1) & (others < costs[i]).any(axis=1)
        on_front[i] = not dominated.any()
    return on_front


def hypervolume_2d(
    points: np.ndarray, directions: Sequence[Direction], reference: Sequence[float]
) -> float:
    """Area dominated by the front and bounded by the reference point (2 objectives)."""
    costs = _as_minimisation(points, directions)
    ref = _as_minimisation(np.asarray([reference]), directions)[0]
    front = costs[pareto_front(points, directions)]
    front = front[(front < ref).all(axis=1)]
    front = front[np.argsort(front[:, 0])]
    area, previous_y = 0.0, ref[1]
    for x, y in front:
        if y < previous_y:
            area += (ref[0] - x) * (previous_y - y)
            previous_y = y
    return float(area)
