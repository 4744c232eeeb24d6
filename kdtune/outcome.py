"""What a finished KD study leaves behind: the results table (Parquet), its Pareto front (tags,
table, figure), the trade-off figures, the printed tables, and the seed summaries of grid studies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kdtune import atomic, plots, results
from kdtune.config import StudySpec
from kdtune.hparams import Declarations, by_name
from kdtune.pareto import hypervolume_2d, pareto_front
from kdtune.runner import trial_rows
from kdtune.search import grid_keys
from kdtune.storage import StudyStorage
from kdtune.tracking import StudyTracker

SUMMARY_METRICS = ("val_acc", "val_ece", "test_acc", "test_ece", "test_nll", "test_ece_ts",
                   "pareto")  # fmt: skip


def hparam_columns(table: pa.Table, declarations: Declarations) -> list[str]:
    """The declared hyperparameters that take more than one value among the table's trials
    (one held by a method at its default everywhere tells the reader nothing)."""
    return [name for name in by_name(declarations) if name in table.column_names
            and len({v for v in table[name].to_pylist() if v is not None}) > 1]  # fmt: skip


def summary_columns(table: pa.Table, declarations: Declarations) -> list[str]:
    """The printed table: trial, method, the hyperparameters that vary, the headline metrics."""
    return ["trial_id", "method", *hparam_columns(table, declarations), *SUMMARY_METRICS]


def legend(columns: Sequence[str], declarations: Declarations) -> str:
    """One line per hyperparameter column: what its name means (from its declaration)."""
    names = by_name(declarations)
    return "\n".join(f"  {c}: {names[c][0][1].meaning}" for c in columns if c in names)


def format_tables(table: pa.Table, front: pa.Table, declarations: Declarations, *,
                  front_title: str) -> str:  # fmt: skip
    """All trials and the front, as the terminal and `kdtune pareto` show them, with what each
    hyperparameter column means."""
    columns = summary_columns(table, declarations)
    return "\n".join([
        results.format_table(table, columns, title=f"\nAll trials ({table.num_rows}):"),
        results.format_table(front, columns, title=f"\n{front_title} ({front.num_rows}):"),
        legend(columns, declarations),
    ])  # fmt: skip


def mark_front(rows: list[dict[str, Any]], objectives: Sequence[tuple[str, str]]) -> np.ndarray:
    """Set each row's `pareto` flag (finished trials only); returns the objective values."""
    names = [metric for metric, _ in objectives]
    points = np.array([[row.get(n, np.nan) if row["status"] == "TERMINATED" else np.nan
                        for n in names] for row in rows], dtype=float)  # fmt: skip
    points = points.reshape(len(rows), len(names))
    for row, flag in zip(rows, pareto_front(points, [mode for _, mode in objectives])):
        row["pareto"] = bool(flag)
    return points


def write_outcome(
    spec: StudySpec, trials: Sequence[Any], tracker: StudyTracker, storage: StudyStorage,
    declarations: Declarations,
) -> tuple[pa.Table, pa.Table]:  # fmt: skip
    """Results and front to Parquet and text, Pareto tags and figures onto the parent run."""
    folder = storage.local_dir
    rows = trial_rows(trials, tracker.trial_runs())
    points = mark_front(rows, spec.objectives)
    table = results.to_table(rows)
    front = table.filter(pc.equal(table["pareto"], True))
    results.write_table(table, folder / "results.parquet")
    results.write_table(front, folder / "pareto.parquet")
    tracker.tag_pareto({r["mlflow_run_id"]: r["pareto"] for r in rows if r["mlflow_run_id"]})
    columns = summary_columns(table, declarations)
    atomic.write_text(folder / "pareto.txt", results.format_table(front, columns) + "\n")
    finished = [r for r in rows if r["status"] == "TERMINATED"]
    artifacts = [folder / name for name in ("results.parquet", "pareto.parquet", "pareto.txt")]
    artifacts += _figures(spec, rows, points, folder, tracker)
    tracker.log_study_artifacts(artifacts)
    storage.publish(*artifacts)
    tracker.log_study_metrics({"num_trials": len(rows), "num_finished": len(finished),
                               "pareto_size": sum(r["pareto"] for r in rows)})  # fmt: skip
    return table, front


def _figures(
    spec: StudySpec, rows: list[dict[str, Any]], points: np.ndarray, folder: Path,
    tracker: StudyTracker,
) -> list[Path]:  # fmt: skip
    """The Pareto scatter (and hypervolume) of two objectives; metrics against the temperature."""
    figures = []
    finished = [r for r in rows if r["status"] == "TERMINATED"]
    if len(spec.objectives) == 2 and finished:
        (x_name, x_mode), (y_name, y_mode) = spec.objectives
        figures.append(plots.pareto_scatter(
            points[:, 0], points[:, 1], [r["pareto"] for r in rows], [r["method"] for r in rows],
            x_label=x_name, y_label=y_name, path=folder / "pareto.png",
            title=f"{spec.name}: {x_name} ({x_mode}) vs {y_name} ({y_mode})"))  # fmt: skip
        worst = [0.0 if x_mode == "max" else np.nanmax(points[:, 0]) * 1.1,
                 0.0 if y_mode == "max" else np.nanmax(points[:, 1]) * 1.1]  # fmt: skip
        tracker.log_study_metrics({"hypervolume": hypervolume_2d(points, [x_mode, y_mode], worst)})
    with_t = [r for r in finished if "temperature" in r and "test_acc" in r]
    if with_t:
        figures.append(plots.temperature_tradeoff(
            [r["temperature"] for r in with_t],
            {k: [r[k] for r in with_t] for k in ("test_acc", "test_ece", "test_ece_ts")},
            [r["method"] for r in with_t], path=folder / "temperature_tradeoff.png"))  # fmt: skip
    return figures


def grid_summary(spec: StudySpec, table: pa.Table, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std over the seeds of each configuration of a grid study, each labelled by
    what its point sets ("mixup_kd alpha=0.5") in a `config` entry."""
    keys = grid_keys(spec)
    summary = results.seed_summary(table.to_pylist(), keys, metrics)
    for entry in summary:
        point = next((p for p in spec.grid if all(entry.get(k) == v for k, v in p.items())),
                     {"method": entry["method"]})  # fmt: skip
        entry["config"] = config_label(point, list(point))
    return summary


def config_label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    settings = [f"{k}={values[k]:.4g}" if isinstance(values[k], float) else f"{k}={values[k]}"
                for k in keys[1:] if values.get(k) is not None]  # fmt: skip
    return " ".join([str(values["method"]), *settings])

