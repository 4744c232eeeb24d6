"""Pareto fronts over several objectives, each maximised or minimised."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Direction = str  # "max" or "min"


def as_minimisation(points: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
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
    costs = as_minimisation(points, directions)
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
    costs = as_minimisation(points, directions)
    ref = as_minimisation(np.asarray([reference]), directions)[0]
    front = costs[pareto_front(points, directions)]
    front = front[(front < ref).all(axis=1)]
    front = front[np.argsort(front[:, 0])]
    area, previous_y = 0.0, ref[1]
    for x, y in front:
        if y < previous_y:
            area += (ref[0] - x) * (previous_y - y)
            previous_y = y
    return float(area)


def nondominated_ranks(points: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Each row's non-dominated front: 0 for the Pareto front, 1 for the front of the rest, ...
    Rows with a non-finite objective come after every finite one."""
    costs = as_minimisation(points, directions)
    ranks = np.full(len(costs), len(costs), dtype=int)
    left = np.isfinite(costs).all(axis=1)
    rank = 0
    while left.any():
        remaining = np.where(left[:, None], costs, np.nan)
        front = left & pareto_front(remaining, ["min"] * costs.shape[1])
        ranks[front] = rank
        left &= ~front
        rank += 1
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row within its set: per objective, the gap between its
    two neighbours, normalised by the objective's range, summed; the extremes are infinite."""
    points = np.asarray(points, dtype=float)
    n, m = points.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        span = points[order[-1], j] - points[order[0], j]
        distance[order[[0, -1]]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (points[order[2:], j] - points[order[:-2], j]) / span
    return distance


def best_first(points: np.ndarray, directions: Sequence[Direction]) -> np.ndarray:
    """Row indices, best first: by non-dominated front, then, within a front, by crowding
    distance (the most isolated first, so a cut keeps the front's spread and both extremes),
    then by row order (earlier first)."""
    ranks = nondominated_ranks(points, directions)
    crowding = np.zeros(len(ranks))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        finite = np.isfinite(np.asarray(points, float)[members]).all(axis=1)
        if finite.all():
            crowding[members] = crowding_distance(np.asarray(points, float)[members])
    return np.array(sorted(range(len(ranks)), key=lambda i: (ranks[i], -crowding[i], i)), int)
