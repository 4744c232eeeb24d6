"""What a finished KD study leaves behind: a row per trial, the results table (Parquet), its
Pareto front (tags, table, static and interactive figures), the trade-off figure, the parent
run's description, the printed tables, the seed summaries of grid studies, and a search's
reports: which hyperparameters mattered, and what MO-ASHA spent and how far its rungs foresaw
the end.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kdtune import atomic, plots, tables
from kdtune.callback import FINISHED_STATES, run_name, stopped_at, trial_failure
from kdtune.config import Log, StudySpec
from kdtune.hparams import KD_TEMPERATURE, Declarations, by_name, with_role
from kdtune.importance import (
    MIN_TRIALS,
    format_agreement,
    format_importances,
    rung_agreement,
    study_importances,
    with_seed_means,
)
from kdtune.metrics import worst_value
from kdtune.replicates import SeedFront, configuration_key, seed_front
from kdtune.reports import last_report
from kdtune.search import grid_keys
from kdtune.storage import StudyStorage
from kdtune.tracking import (
    CONFIGURATIONS_VIEW,
    FRONT_VIEW,
    STOPPED_TAG,
    SUMMARY_TAG,
    TRIAL_TAG,
    TRIALS_VIEW,
    StudyTracker,
    run_route,
    ui_address,
    view_link,
)
from kdtune.trainable import BEST_ON_TEST

METRIC_PREFIXES = ("train_", "val_", "test_")  # a trial's metrics: averaged over seeds on the front
SUMMARY_METRICS = ("val_acc", "val_ece", "test_acc", BEST_ON_TEST, "test_ece", "test_nll",
                   "test_ece_ts", "pareto")  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    table: pa.Table  # every trial, sorted by the first objective, best first
    front: pa.Table
    files: list[Path]  # what was written, in the study folder and on the parent run
    description: str = ""  # the parent run's, as written
    # Tune trial id -> its configuration's seed means, where it was measured over several seeds
    seed_means: Mapping[str, list[float]] = field(default_factory=dict)


def hparam_columns(table: pa.Table, declarations: Declarations) -> list[str]:
    """The declared hyperparameters that take more than one value among the table's trials
    (one held by a method at its default everywhere tells the reader nothing)."""
    return [name for name in by_name(declarations) if name in table.column_names
            and len({v for v in table[name].to_pylist() if v is not None}) > 1]  # fmt: skip


def summary_columns(table: pa.Table, declarations: Declarations) -> list[str]:
    """The printed table: trial, method, the hyperparameters that vary, the headline metrics,
    and how trials ended when some did not run their budget."""
    statuses = set(table["status"].to_pylist()) if "status" in table.column_names else set()
    ended = ["status"] + (["stopped_at"] if "STOPPED" in statuses else [])
    seeds = ["seed"] if len(set(table["seed"].to_pylist() if "seed" in table.column_names
                                else [])) > 1 else []  # fmt: skip
    return ["trial_id", "method", *hparam_columns(table, declarations), *seeds, *SUMMARY_METRICS,
            *(ended if statuses - {"TERMINATED"} else [])]  # fmt: skip


def front_columns(table: pa.Table, declarations: Declarations) -> list[str]:
    """The printed front: a row per configuration, its seed means, standard errors (shown as
    `mean ± se`), seed count and probability of being non-dominated."""
    shown = [c for c in summary_columns(table, declarations)
             if c not in ("status", "stopped_at", "seed")]  # fmt: skip
    return [*shown, "seeds", "p_nondominated"]


def with_errors(front: pa.Table) -> pa.Table:
    """The front for reading: each objective's cell `mean ± se` (from its `<objective>_se`
    column) where it has an error."""
    rows = front.to_pylist()
    names = [c[:-3] for c in front.column_names
             if c.endswith("_se") and c[:-3] in front.column_names]  # fmt: skip
    for row in rows:
        for name in names:
            error = row.pop(f"{name}_se", None)
            if row.get(name) is not None:
                row[name] = f"{row[name]:.4f}" + ("" if error is None else f" ± {error:.4f}")
    return tables.to_table(rows) if rows else front


def legend(columns: Sequence[str], declarations: Declarations, width: int | None = None) -> str:
    """What the table's abbreviations mean, once: each hyperparameter (from its declaration),
    then the metric names."""
    names = by_name(declarations)
    lines = [f"  {c}: {names[c][0][1].meaning}" for c in columns if c in names]
    metrics = [c for c in columns if c.startswith(("val_", "test_"))]
    if metrics:
        lines.append("  val_/test_: on the validation/test split; acc accuracy, ece expected "
                     "calibration error (15 bins), nll negative log-likelihood; *_ts after "
                     "temperature scaling fitted on validation")  # fmt: skip
    if BEST_ON_TEST in columns:
        lines.append(f"  {BEST_ON_TEST}: the best epoch's test accuracy, the epoch chosen on the "
                     "test set as most CIFAR-100 KD tables do; test_acc is the last epoch's (the "
                     "cifar_benchmark protocol's own figure)")  # fmt: skip
    if "pareto" in columns:
        lines.append("  pareto: the trial's configuration is on the front of the seed means of "
                     "the study's objectives (over the trials that ran their whole budget)")
    if "seeds" in columns:
        lines.append("  front: a row per configuration, its values the means over its seeds "
                     "(`seeds`) ± their standard error (the seed noise pooled over the "
                     "configurations measured more than once); p_nondominated: how often it is "
                     "on the front when the seeds are resampled (bootstrap)")  # fmt: skip
    if "stopped_at" in columns:
        lines.append("  STOPPED: MO-ASHA stopped the trial at epoch stopped_at (its metrics are "
                     "that epoch's)")  # fmt: skip
    if width is None:
        return "\n".join(lines)
    return "\n".join(textwrap.fill(line, width, subsequent_indent="    ") for line in lines)


def sort_by_objective(table: pa.Table, objective: tuple[str, str]) -> pa.Table:
    metric, mode = objective
    if metric not in table.column_names:
        return table
    return table.sort_by([(metric, "descending" if mode == "max" else "ascending")])


def format_tables(table: pa.Table, front: pa.Table, declarations: Declarations, *,
                  front_title: str) -> str:  # fmt: skip
    """All trials and the front, as the terminal and `kdtune pareto` show them, best first by
    the first objective, with what each abbreviation of a shown column means."""
    columns = [c for c in summary_columns(table, declarations) if c in table.column_names]
    shown = front_columns(table, declarations)
    width = tables.terminal_width()
    return "\n".join([
        tables.format_table(table, columns, title=f"\nAll trials ({table.num_rows}):",
                            width=width),
        tables.format_table(with_errors(front), shown, width=width,
                            title=f"\n{front_title} ({front.num_rows} configurations):"),
        legend(list(dict.fromkeys([*columns, *(c for c in shown if c in front.column_names)])),
               declarations, width),
    ])  # fmt: skip


def reference_point(spec: StudySpec, points: np.ndarray) -> list[float]:
    """The hypervolume's reference: the spec's, so that values compare across studies; else
    each objective's worst possible value, or where it has none its worst seen x 1.1."""
    if spec.reference_point:
        return list(spec.reference_point)
    reference = []
    for i, (metric, mode) in enumerate(spec.objectives):
        worst = worst_value(metric)
        if worst is None:
            worst = float(np.nanmax(points[:, i]) * 1.1 if mode == "min"
                          else np.nanmin(points[:, i]) * 0.9)  # fmt: skip
        reference.append(worst)
    return reference


def _measured(row: Mapping[str, Any], names: Sequence[str]) -> bool:
    """A trial that ran its whole budget and has every objective."""
    values = [row.get(n) for n in names]
    return row["status"] == "TERMINATED" and all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in values)  # fmt: skip


def mark_front(rows: list[dict[str, Any]],
               spec: StudySpec) -> tuple[list[dict[str, Any]], SeedFront | None]:  # fmt: skip
    """The front of the seed means: each configuration's trials that ran their whole budget
    (grouped by `config_key`), their means, standard errors, seed counts, probabilities of
    being non-dominated and the hypervolume's interval (`replicates.seed_front`). Sets each
    trial row's `pareto` (its configuration is on the front) and `seeds`; returns one row per
    configuration (its means, `<objective>_se`, `seeds`, `p_nondominated`, `trial_ids`,
    `pareto`) and the SeedFront (None when no trial ran its budget)."""
    names = [metric for metric, _ in spec.objectives]
    members: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if _measured(row, names):
            members.setdefault(row["config_key"], []).append(row)
    for row in rows:
        row["pareto"], row["seeds"] = False, len(members.get(row["config_key"], ()))
    if not members:
        return [], None
    groups = [np.array([[r[n] for n in names] for r in found]) for found in members.values()]
    front = seed_front(groups, [mode for _, mode in spec.objectives],
                       reference_point(spec, np.vstack(groups)), seed=spec.seed)  # fmt: skip
    for i, found in enumerate(members.values()):
        for row in found:
            row["pareto"] = bool(front.on_front[i])
    return [_configuration_row(found, names, front, i)
            for i, found in enumerate(members.values())], front


def configuration_summaries(spec: StudySpec, configurations: Sequence[Mapping[str, Any]],
                            label_keys: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """What MLflow gets of each configuration measured over several seeds: a summary run
    (`tracking.summarise_configurations`) named by its settings and seed count, its
    config as params, its seed means, standard errors, seed count and p_nondominated as
    metrics. (One for a configuration of one seed would repeat its trial's run.)"""
    names = [m for m, _ in spec.objectives]
    shown = [*names, *(f"{m}_se" for m in names), "test_acc", "test_ece", "test_ece_ts",
             "seeds", "p_nondominated"]  # fmt: skip
    return [{"config_key": c["config_key"], "pareto": c["pareto"],
             "name": f"{run_name(c, label_keys)} ({c['seeds']} seeds)",  # c has no seed
             "params": {k: c[k] for k in c["config_params"]}, "method": c["method"],
             "metrics": {k: c[k] for k in shown if c.get(k) is not None}}
            for c in configurations if c["seeds"] > 1]  # fmt: skip


def _configuration_row(found: list[dict[str, Any]], names: Sequence[str], front: SeedFront,
                       i: int) -> dict[str, Any]:  # fmt: skip
    """A front configuration as pareto.parquet holds it: its first trial's config, run and
    name, every metric averaged over its seeds, and its uncertainty."""
    row = {k: v for k, v in found[0].items() if k != "seed"}
    for key in found[0]:
        values = [r.get(key) for r in found]
        if key.startswith(METRIC_PREFIXES) and all(isinstance(v, (int, float)) for v in values):
            row[key] = float(np.mean(values))
    for j, name in enumerate(names):
        row[name] = float(front.means[i, j])
        row[f"{name}_se"] = None if math.isnan(front.errors[i, j]) else float(front.errors[i, j])
    row.update(seeds=int(front.seeds[i]), p_nondominated=float(front.p_nondominated[i]),
               trial_ids=",".join(r["trial_id"] for r in found),
               pareto=bool(front.on_front[i]))  # fmt: skip
    return row


def write_outcome(
    spec: StudySpec, trials: Sequence[Any], tracker: StudyTracker, storage: StudyStorage,
    declarations: Declarations, label_keys: Mapping[str, Sequence[str]], question: str,
) -> Outcome:  # fmt: skip
    """Results and front to Parquet and text, Pareto tags, figures and the description onto
    the parent run."""
    folder = storage.local_dir
    rows = trial_rows(trials, tracker.trial_runs())
    for row in rows:
        row["run_name"] = run_name(row, label_keys)
    configurations, seed_means = mark_front(rows, spec)
    table = sort_by_objective(tables.to_table(rows), spec.objectives[0])
    front = sort_by_objective(tables.to_table([c for c in configurations if c["pareto"]]),
                              spec.objectives[0])  # fmt: skip
    tables.write_table(table, folder / "results.parquet")
    tables.write_table(front, folder / "pareto.parquet")
    tracker.tag_pareto({r["mlflow_run_id"]: r["pareto"] for r in rows if r["mlflow_run_id"]})
    tracker.summarise_configurations(configuration_summaries(spec, configurations, label_keys))
    atomic.write_text(folder / "pareto.txt",
                      tables.format_table(with_errors(front),
                                          front_columns(table, declarations)) + "\n")
    files = [folder / name for name in ("results.parquet", "pareto.parquet", "pareto.txt")]
    files += _figures(spec, rows, front, seed_means, folder, tracker, declarations)
    tracker.log_study_artifacts(files)
    storage.publish(*files)
    finished = sum(r["status"] == "TERMINATED" for r in rows)
    tracker.log_study_metrics({"num_trials": len(rows), "num_finished": finished,
                               "pareto_size": front.num_rows})  # fmt: skip
    _save_views(spec, tracker, label_keys)
    text = description(spec, question, table, front, files, tracker.experiment_id)
    tracker.describe_study(text)
    names = [m for m, _ in spec.objectives]
    means = {trial_id: [c[m] for m in names] for c in configurations if c["seeds"] > 1
             for trial_id in c["trial_ids"].split(",")}  # fmt: skip
    return Outcome(table, front, files, text, means)


def run_link(row: Mapping[str, Any], experiment_id: str) -> str:
    """A trial's run name as a Markdown link to its run (the name alone if it has none)."""
    name = f"`{row['run_name']}`"
    if not row.get("mlflow_run_id"):
        return name
    return f"[{name}]({run_route(experiment_id, row['mlflow_run_id'])})"


def _save_views(spec: StudySpec, tracker: StudyTracker,
                label_keys: Mapping[str, Sequence[str]]) -> None:  # fmt: skip
    """Two views of the runs table, best first by the first objective, with the method, the
    hyperparameters that tell trials apart, the objectives and test metrics as columns: every
    trial, and the Pareto front. (A child run list without them shows no metric at all.)"""
    names = dict.fromkeys(k for keys in label_keys.values() for k in keys)
    metrics = dict.fromkeys([*(m for m, _ in spec.objectives), "test_acc", "test_ece",
                             "test_ece_ts"])  # fmt: skip
    # MLflow has no status for a run stopped early (it is FINISHED): its stopping epoch is a
    # column, empty for a trial that ran its budget
    columns = ["params.`method`", *(f"params.`{k}`" for k in names),
               *(f"metrics.`{m}`" for m in metrics), "tags.`pareto`",
               f"tags.`{STOPPED_TAG}`"]  # fmt: skip
    metric, mode = spec.objectives[0]
    order = (f"metrics.`{metric}`", mode == "min")
    objectives = [m for m, _ in spec.objectives]
    sweep = [{"type": "SCATTER", "displayName": f"{objectives[0]} against {objectives[-1]}",
              "xaxis": {"key": objectives[0], "type": "METRIC"},
              "yaxis": {"key": objectives[-1], "type": "METRIC"}},
             {"type": "PARALLEL", "displayName": "hyperparameters to objectives",
              "selectedParams": list(names), "selectedMetrics": objectives, "showAllRuns": True},
             *(_curves(m) for m in objectives)]  # fmt: skip
    trials = f"tags.`{TRIAL_TAG}` LIKE '%'"
    tracker.save_view(TRIALS_VIEW, "kdtune: all trials", trials, columns, order, sweep)
    tracker.save_view(FRONT_VIEW, "kdtune: Pareto front",
                      f"tags.pareto = 'true' and {trials}", columns, order,
                      [_curves(m) for m in objectives])  # fmt: skip
    measured = [*(f"metrics.`{m}`" for m in objectives), *(f"metrics.`{m}_se`" for m in objectives),
                "metrics.`seeds`", "metrics.`p_nondominated`", "tags.`pareto`"]  # fmt: skip
    settings = ["params.`method`", *(f"params.`{k}`" for k in names if k != "seed")]
    tracker.save_view(CONFIGURATIONS_VIEW, "kdtune: configurations over seeds",
                      f"tags.`{SUMMARY_TAG}` = 'true'", [*settings, *measured], order,
                      [sweep[0]])  # fmt: skip


def _curves(metric: str) -> dict[str, Any]:
    """A line chart card of `metric` per epoch, in the form of MLflow's UI."""
    return {"type": "LINE", "displayName": f"{metric} per epoch", "metricKey": metric,
            "selectedMetricKeys": [metric], "lineSmoothness": 0, "xAxisScaleType": "linear",
            "scaleType": "linear", "xAxisKey": "step", "selectedXAxisMetricKey": "",
            "yAxisKey": "metric", "yAxisExpressions": [], "ignoreOutliers": False,
            "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True,
            "range": {"xMin": None, "xMax": None, "yMin": None, "yMax": None}}  # fmt: skip


def _figures(
    spec: StudySpec, rows: list[dict[str, Any]], front: pa.Table, seed_means: SeedFront | None,
    folder: Path, tracker: StudyTracker, declarations: Declarations,
) -> list[Path]:  # fmt: skip
    """The Pareto front of two objectives (PNG, and HTML to explore), with its hypervolume
    and the hypervolume's interval; test metrics against the KD temperature."""
    figures = []
    if seed_means is not None:
        value, low, high = seed_means.hypervolume
        tracker.log_study_metrics({name: v for name, v in (
            ("hypervolume", value), ("hypervolume_low", low), ("hypervolume_high", high))
            if math.isfinite(v)})  # fmt: skip
    if len(spec.objectives) == 2 and seed_means is not None:
        figures += _pareto_figures(spec, rows, front, folder, tracker)
    finished = [r for r in rows if r["status"] == "TERMINATED"]
    temperature = {method: declared.name for method, hparams in declarations.items()
                   if (declared := with_role(hparams, KD_TEMPERATURE))}  # fmt: skip
    with_t = [r for r in finished if r["method"] in temperature
              and r.get(temperature[r["method"]]) is not None and "test_acc" in r]  # fmt: skip
    # a trade-off needs a method tried at several temperatures (a method zoo's one each is not)
    tried = [len({r[temperature[m]] for r in with_t if r["method"] == m}) for m in temperature]
    if max(tried, default=0) >= 3:
        figures.append(plots.temperature_tradeoff(
            [r[temperature[r["method"]]] for r in with_t],
            {k: [r[k] for r in with_t] for k in ("test_acc", "test_ece", "test_ece_ts")
             if k in with_t[0]},  # no *_ts without a validation split to fit T on
            [r["method"] for r in with_t], path=folder / "temperature_tradeoff.png",
            title=f"{spec.name}: test accuracy and calibration against the KD temperature",
            on_front=[bool(r["pareto"]) for r in with_t]))
    return figures


def _pareto_figures(spec: StudySpec, rows: list[dict[str, Any]], front: pa.Table, folder: Path,
                    tracker: StudyTracker) -> list[Path]:  # fmt: skip
    """pareto.png and pareto.html: every trial, a stopped one at the values it stopped with
    (only the finished ones make the front), and the front of the seed means with its errors."""
    (x_name, x_mode), (y_name, y_mode) = spec.objectives
    on_front, groups = [r["pareto"] for r in rows], [r["method"] for r in rows]
    stopped = [r["status"] == "STOPPED" for r in rows]
    x, y = ([r.get(name) if r.get(name) is not None else np.nan for r in rows]
            for name in (x_name, y_name))  # fmt: skip
    labels = {"x_label": plots.metric_label(x_name, x_mode),
              "y_label": plots.metric_label(y_name, y_mode), "stopped": stopped}  # fmt: skip
    early = f" ({sum(stopped)} stopped early, hollow)" if any(stopped) else ""
    title = f"{spec.name}: {len(rows)} trials{early}, the front of the seed means"
    members = front.to_pylist()
    labels["front"] = plots.FrontPoints(
        *([m[name] for m in members] for name in (x_name, y_name)),
        *([m.get(f"{name}_se") if m.get(f"{name}_se") is not None else np.nan for m in members]
          for name in (x_name, y_name)),
        [_member_hover(m, spec) for m in members])  # fmt: skip
    scatter = plots.pareto_scatter(x, y, on_front, groups, path=folder / "pareto.png",
                                   title=title, **labels)  # fmt: skip
    routes = [run_route(tracker.experiment_id, r["mlflow_run_id"]) if r.get("mlflow_run_id")
              else "" for r in rows]  # fmt: skip
    page = plots.pareto_html(x, y, on_front, groups, [_hover(r, spec) for r in rows],
                             path=folder / "pareto.html", title=title, routes=routes,
                             server=ui_address(tracker.tracking_uri), **labels)  # fmt: skip
    return [scatter, page]


def _hover(row: Mapping[str, Any], spec: StudySpec) -> str:
    """A trial's hover text: its run name, status and objectives."""
    scores = [f"{m} = {row[m]:.4f}" for m, _ in spec.objectives if row.get(m) is not None]
    ended = (f"stopped at epoch {row.get('stopped_at')}" if row["status"] == "STOPPED"
             else row["status"].lower())  # fmt: skip
    return "\n".join([row["run_name"], f"trial {row['trial_id']}, "
                      f"{'on the front' if row.get('pareto') else ended}",
                      *scores])  # fmt: skip


def _member_hover(member: Mapping[str, Any], spec: StudySpec) -> str:
    """A front configuration's hover text: its run name, seeds, means ± errors."""
    scores = [f"{m} = {member[m]:.4f}" + (f" ± {member[f'{m}_se']:.4f}"
                                          if member.get(f"{m}_se") is not None else "")
              for m, _ in spec.objectives]  # fmt: skip
    return "\n".join([member["run_name"], f"mean of {member['seeds']} seeds (trials "
                      f"{member['trial_ids']}), p_nondominated {member['p_nondominated']:.2f}",
                      *scores])  # fmt: skip


# MLflow keeps a tag's first 8,000 characters, and a description is a tag: a long front (a big
# search's duplicated optima) would cut off everything below it, so the table shows this many
FRONT_ROWS_SHOWN = 25


def front_markdown(spec: StudySpec, front: pa.Table, experiment_id: str) -> str:
    """The front as a Markdown table: each configuration's run link, seed count, seed means ±
    standard errors and p_nondominated; the first FRONT_ROWS_SHOWN, then a link to the rest."""
    metrics = list(dict.fromkeys([*(m for m, _ in spec.objectives), "test_acc", "test_ece",
                                  "test_ece_ts"]))  # fmt: skip

    def cell(value: Any, digits: int = 4) -> str:  # `with_errors` made the objectives text
        return value if isinstance(value, str) else "-" if value is None else f"{value:.{digits}f}"

    rows = [[run_link(r, experiment_id), str(r.get("seeds", 1)),
             *(cell(r.get(m)) for m in metrics), cell(r.get("p_nondominated"), 2)]
            for r in with_errors(front).to_pylist()[:FRONT_ROWS_SHOWN]]  # fmt: skip
    text = "\n".join(["| run | seeds | " + " | ".join(f"`{m}`" for m in metrics)
                      + " | `p_nondominated` |", "|---" * (len(metrics) + 3) + "|",
                      *("| " + " | ".join(row) + " |" for row in rows)])  # fmt: skip
    more = front.num_rows - len(rows)
    if more > 0:
        text += (f"\n\n... and {more} more configurations on [the front]"
                 f"({view_link(experiment_id, FRONT_VIEW)}).")  # fmt: skip
    return text


def description(spec: StudySpec, question: str, table: pa.Table, front: pa.Table,
                files: Sequence[Path], experiment_id: str) -> str:  # fmt: skip
    """The parent run's description (Markdown): the question, what ran, the front as a table,
    where the figures are."""
    goals = ", ".join(f"`{m}` ({'higher' if d == 'max' else 'lower'} is better)"
                      for m, d in spec.objectives)  # fmt: skip
    finished = sum(s == "TERMINATED" for s in table["status"].to_pylist())
    names = [f"`{path.name}`" for path in files]
    simulated = [f"**Simulated**: no training; every trial replayed the curve measured for its "
                 f"configuration in the blackbox `{spec.simulate}` (its `simulated_config` and "
                 "`simulated_seed`), so no teacher and no reliability diagrams. A test of the "
                 "study's set-up, not a result."] if spec.simulate else []  # fmt: skip
    return "\n\n".join([
        f"### {question or spec.name}",
        *simulated,
        f"{table.num_rows} trials ({finished} finished) of {', '.join(spec.methods)}: "
        f"{spec.teacher} distilled into {spec.student} on {spec.dataset}, "
        f"{spec.recipe.epochs} epochs each. Objectives: {goals}.",
        f"#### Pareto front ({front.num_rows} configurations)",
        "Each configuration's seed means ± their standard error (over `seeds` seeds; the run "
        "linked is its first), and how often it stays on the front when its seeds are "
        "resampled (`p_nondominated`).",
        front_markdown(spec, front, experiment_id) if front.num_rows else "(no finished trial)",
        "#### Where to look\n"
        f"- The runs table, best first: [every trial]({view_link(experiment_id)}), "
        f"[the front]({view_link(experiment_id, FRONT_VIEW)}), [each configuration over its "
        f"seeds]({view_link(experiment_id, CONFIGURATIONS_VIEW)}) (also in the Views menu); "
        f"[the sweep charts]({view_link(experiment_id, charts=True)}): the objectives against "
        "each other, parallel coordinates from the hyperparameters to them, the curves "
        f"(the [front's curves]({view_link(experiment_id, FRONT_VIEW, charts=True)})).\n"
        "- `pareto.html` (Artifacts): every trial a point, the front drawn; hover a point for "
        "its run, click it to open the run; the wheel zooms.\n"
        f"- Artifacts of this run: {', '.join(names)}, the teacher's `reliability_teacher.png`"
        + (", a grid's seed means as `summary.parquet`" if spec.grid else "")
        + ", and the figures the study's script draws after it, if any.\n"
        "- Each child run: its hyperparameters (Parameters), its curves per epoch (Model "
        "metrics) and `reliability_test.png`.",
    ])  # fmt: skip


def grid_summary(spec: StudySpec, table: pa.Table, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and std over the seeds of each configuration of a grid study, each labelled by
    what its point sets ("mixup_kd alpha=0.5") in a `config` entry, in the grid's order."""
    keys = grid_keys(spec)
    rows = sorted(table.to_pylist(), key=lambda r: _grid_index(spec, r))
    summary = tables.seed_summary(rows, keys, metrics)
    for entry in summary:
        index = _grid_index(spec, entry)
        point = spec.grid[index] if index < len(spec.grid) else {"method": entry["method"]}
        entry["config"] = config_label(point, list(point))
    return summary


def _grid_index(spec: StudySpec, values: Mapping[str, Any]) -> int:
    """Which grid point a row (or a summary entry) belongs to."""
    return next((i for i, point in enumerate(spec.grid)
                 if all(values.get(k) == v for k, v in point.items())), len(spec.grid))  # fmt: skip


def config_label(values: Mapping[str, Any], keys: Sequence[str]) -> str:
    settings = [f"{k}={values[k]:.4g}" if isinstance(values[k], float) else f"{k}={values[k]}"
                for k in keys[1:] if values.get(k) is not None]  # fmt: skip
    return " ".join([str(values["method"]), *settings])


def trial_rows(trials: Sequence[Any], run_ids: Mapping[str, str]) -> list[dict[str, Any]]:
    """One row per Tune trial: its config, its last metrics, its status (TERMINATED: it ran its
    budget; STOPPED: the scheduler stopped it at `stopped_at`, its metrics those of that epoch;
    ERROR; UNFINISHED: an interrupted study left it running) and its child run's id."""
    rows = []
    for trial in trials:
        metrics = {k: v for k, v in last_report(trial.last_result).items() if k != "config"}
        status = trial.status if trial.status in FINISHED_STATES else "UNFINISHED"
        stopped = stopped_at(trial)
        rows.append({**trial.config, **metrics, "trial_id": trial.trial_id,
                     "config_key": configuration_key(trial.config),
                     "config_params": [k for k in trial.config if k != "seed"],
                     "status": "STOPPED" if stopped is not None else status,
                     "stopped_at": stopped,
                     "error": trial_failure(trial) if status == "ERROR" else None,
                     "mlflow_run_id": run_ids.get(trial.trial_id)})  # fmt: skip
    return rows


# why optuna-dashboard's importances are other numbers than kdtune's, said where both are seen
IMPORTANCE_NOTE = (
    "optuna-dashboard's importance panel ranks other numbers: Optuna's default evaluator over "
    "every finished trial at once, each method's hyperparameters under their own names "
    "(`kd.temperature`, `mixup_kd.temperature`) with the trials of the other methods missing "
    "them. kdtune's ranking above is per method, over the trials judged at one budget, which "
    "is the question a study asks; read that one.")


def describe_search(tracker: StudyTracker, outcome: Outcome, reports: Sequence[str]) -> None:
    """The parent run's description, with what the search printed after its tables: which
    hyperparameters mattered, what MO-ASHA spent and how far its rungs foresaw the end."""
    shown = "\n".join(line.strip("\n") for line in reports)
    tracker.describe_study(f"{outcome.description}\n\n#### After the search\n\n```\n{shown}\n"
                           f"```\n\n{IMPORTANCE_NOTE}")


def early_stopping_report(spec: StudySpec, trials: list[dict[str, Any]], searched: Any,
                          tracker: StudyTracker, log: Log) -> None:  # fmt: skip
    """What MO-ASHA spent (the parent run's trial_epochs) and how well its rungs foresaw the
    final ranking (rung_spearman_<objective>, one step per rung epoch), printed and logged."""
    spent = sum(int(t.get("epoch") or 0) for t in trials)
    full = sum(t["status"] == "TERMINATED" for t in trials)
    budget = len(trials) * spec.recipe.epochs
    replicates = sum(t.get("seed") != spec.seed for t in trials)
    among = f" ({replicates} of them the front's seed replicates)" if replicates else ""
    log(f"\nMO-ASHA: {full} of {len(trials)} trials{among} ran their {spec.recipe.epochs} "
        f"epochs; the search spent {spent} trial-epochs, {spent / max(budget, 1):.0%} of the "
        f"{budget} that running every trial in full would have")  # fmt: skip
    tracker.log_study_metrics({"trial_epochs": spent})
    rows = rung_agreement(searched, spec.objectives)
    if not rows:
        return
    log(format_agreement(rows))
    for row in rows:
        tracker.log_study_metrics({f"rung_spearman_{row['objective']}": row["spearman"]},
                                        step=row["epoch"])


def importance_report(spec: StudySpec, searched: Any, tracker: StudyTracker,
                      storage: StudyStorage, log: Log,
                      seed_means: Mapping[str, list[float]]) -> list[Path]:  # fmt: skip
    """Which hyperparameters mattered, per objective, the trials of a configuration measured
    over several seeds at its seed means: printed, and as importance.parquet and importance.png
    on the parent run."""
    rows = study_importances(with_seed_means(searched, seed_means), spec.objectives,
                             spec.importance_evaluator, seed=spec.seed)  # fmt: skip
    if not rows:
        log(f"\nimportance: fewer than {MIN_TRIALS} trials reached a common budget; no ranking")
        return []
    replicated = [t for t in searched.get_trials(deepcopy=False)
                  if t.user_attrs.get("tune_trial_id") in seed_means]  # fmt: skip
    log(format_importances(rows) + (f"\n  ({len(replicated)} of those trials valued at their "
                                    "configuration's seed means, measured over several seeds)"
                                    if replicated and rows[0]["budget"] == "the whole budget"
                                    else ""))  # fmt: skip
    folder = storage.local_dir
    tables.write_table(tables.summary_table(rows), folder / "importance.parquet")
    files = [folder / "importance.parquet",
             plots.importance_panels(rows, path=folder / "importance.png",
                                     title=f"{spec.name}: which hyperparameters mattered "
                                           f"({rows[0]['evaluator']}, {rows[0]['trials']} "
                                           f"trials at {rows[0]['budget']})")]  # fmt: skip
    tracker.log_study_artifacts(files)
    storage.publish(*files)
    return files
