"""The seed check of a search: re-run its Pareto configurations with new seeds (a grid study named
NAME-reseed) and report the front of their seed means, the search's own values beside them.

A search picks its front on one seed, which flatters it; the re-run shows by how much.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdtune import plots, tables
from kdtune.config import Log, StudySpec
from kdtune.hparams import Declarations
from kdtune.outcome import grid_summary
from kdtune.pareto import pareto_front
from kdtune.runner import StudyResult
from kdtune.search import grid_keys, varied_names


def reseed_spec(spec: StudySpec, front: Sequence[Mapping[str, Any]],
                declarations: Declarations) -> StudySpec:  # fmt: skip
    """The grid study that re-runs each front configuration once per seed of `spec.reseed`: a
    point sets what the search varied; what it held (`fixed`, one-value ranges) stays held."""
    points = tuple({"method": row["method"],
                    **{k: row[k] for k in varied_names(spec, row["method"],
                                                       declarations[row["method"]])}}
                   for row in front)  # fmt: skip
    held = {name: low for name, (low, high) in spec.search.items() if low == high}
    return dataclasses.replace(spec, name=f"{spec.name}-reseed", grid=points, seeds=spec.reseed,
                               reseed=(), search={}, fixed={**spec.fixed, **held})  # fmt: skip


def config_key(values: Mapping[str, Any], keys: Sequence[str]) -> tuple[Any, ...]:
    """A configuration by its values themselves (not a rounded label), to join on."""
    return tuple(values.get(k) for k in keys)


def rerun_front(
    spec: StudySpec, result: StudyResult, run: Callable[[StudySpec], StudyResult],
    declarations: Declarations, log: Log,
) -> list[dict[str, Any]]:  # fmt: skip
    """Run the seed check with `run` (the study runner); returns the seed summary, each entry
    with `front` (on the front of the means) and `search_{objective}` (the search's value)."""
    chosen = result.front.to_pylist()
    if not chosen:
        log("reseed: the front is empty (no finished trial); nothing to re-run")
        return []
    again = reseed_spec(spec, chosen, declarations)
    log(f"\nreseed: {len(chosen)} Pareto configurations x seeds {list(spec.reseed)}")
    second = run(again)
    objectives = [m for m, _ in spec.objectives]
    metrics = list(dict.fromkeys([*objectives, "test_acc", "test_ece", "test_nll", "test_ece_ts"]))
    summary = grid_summary(again, second.table, metrics)
    means = np.array([[e[f"{m}_mean"] for m in objectives] for e in summary], dtype=float)
    on_front = pareto_front(means.reshape(len(summary), len(objectives)),
                            [mode for _, mode in spec.objectives])  # fmt: skip
    keys = grid_keys(again)
    searched = {config_key(row, keys): row for row in chosen}
    for entry, flag in zip(summary, on_front):
        entry["front"] = bool(flag)
        row = searched.get(config_key(entry, keys), {})
        entry.update({f"search_{m}": row.get(m) for m in objectives})
    log(tables.format_summary(
        summary, ["config", "front", *[f"search_{m}" for m in objectives]], metrics,
        title=f"\nSeed-averaged front (seeds {list(spec.reseed)}; search_*: the search's own "
              f"seed {spec.seed}):"))  # fmt: skip
    files = _write(spec, summary, means, on_front, result.study_dir)
    result.publish(files, {"seed_front_size": float(on_front.sum())})
    return summary


def _write(spec: StudySpec, summary: list[dict[str, Any]], means: np.ndarray,
           on_front: np.ndarray, folder: Path) -> list[Path]:  # fmt: skip
    tables.write_table(tables.summary_table(summary), folder / "front_seeds.parquet")
    files = [folder / "front_seeds.parquet"]
    objectives = [m for m, _ in spec.objectives]
    if len(objectives) == 2:
        files.append(plots.labelled_scatter(
            means[:, 0], means[:, 1], [e["config"] for e in summary],
            x_err=[e[f"{objectives[0]}_std"] or 0.0 for e in summary],
            y_err=[e[f"{objectives[1]}_std"] or 0.0 for e in summary],
            highlight=on_front, x_label=plots.metric_label(*spec.objectives[0]),
            y_label=plots.metric_label(*spec.objectives[1]),
            path=folder / "front_seeds.png",
            title=f"{spec.name}: front of the means over seeds {list(spec.reseed)}"))  # fmt: skip
    return files
