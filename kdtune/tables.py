"""Tables of rows: a study's results (one row per trial) and seed summaries, written to and read
from Parquet with pyarrow, and printed as text.

A column keeps its values' type: text (the fixed text columns, and hyperparameters whose values are
names), bool (switches, flags), int64 (whole-number hyperparameters such as k, epochs, seeds) or
float64 (the rest, every metric); a column mixing ints and floats is float64. Writes are atomic
(temp file + rename).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kdtune.atomic import atomic_path

TEXT_COLUMNS = ("trial_id", "status", "error", "method", "mlflow_run_id", "node_id", "run_name")
FLAG_COLUMNS = ("pareto",)


def _column_type(name: str, values: list[Any]) -> pa.DataType:
    present = [v for v in values if v is not None]
    if name in TEXT_COLUMNS or any(isinstance(v, str) for v in present):
        return pa.string()
    if name in FLAG_COLUMNS or (present and all(isinstance(v, bool) for v in present)):
        return pa.bool_()
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    return pa.float64()


def to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) to a table of scalars, each column typed by its values (text, bool, int64,
    float64); other values (lists, dicts) are dropped."""
    names: list[str] = list(TEXT_COLUMNS) + list(FLAG_COLUMNS)
    for row in rows:
        names += [k for k, v in row.items()
                  if k not in names and isinstance(v, (int, float, str))]  # fmt: skip
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        values = [v if isinstance(v, (int, float, str)) else None for v in values]
        kind = _column_type(name, values)
        cast = {pa.string(): str, pa.bool_(): bool, pa.int64(): int}.get(kind, float)
        columns[name] = pa.array([None if v is None else cast(v) for v in values], kind)
    return pa.table(columns)


def write_table(table: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as temp:
        pq.write_table(table, temp)


def read_table(path: str | Path) -> pa.Table:
    return pq.read_table(path)


def terminal_width() -> int | None:
    """The terminal's width when printing to one; None (no wrapping) into a file or a pipe,
    where a whole row on one line is what grep and a pager want."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def format_table(table: pa.Table, columns: Sequence[str], title: str = "", *,
                 width: int | None = None, keep: int = 2) -> str:  # fmt: skip
    """A plain-text table of the chosen columns (those present), floats to 4 decimals. Wider
    than `width`, it is printed in blocks of columns, one under the other, each block led by
    the first `keep` columns (which trial a row is)."""
    present = [c for c in columns if c in table.column_names]
    rows = table.select(present).to_pylist()

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return "-" if value is None else str(value)

    cells = [present] + [[cell(row[c]) for c in present] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(present))]
    lines = [title] if title else []
    for number, block in enumerate(_column_blocks(widths, width, keep)):
        shown = [[r[i].rjust(widths[i]) for i in block] for r in cells]
        lines += [""] if number else []
        lines += ["  ".join(shown[0]), "  ".join("-" * widths[i] for i in block)]
        lines += ["  ".join(row) for row in shown[1:]]
    return "\n".join(lines)


def _column_blocks(widths: Sequence[int], width: int | None, keep: int) -> list[list[int]]:
    """Column indices per printed block: the first `keep` in each, then as many more as fit in
    `width` (at least one); all in one block without a width."""
    if width is None:
        return [list(range(len(widths)))]
    head = list(range(min(keep, len(widths))))
    start = sum(widths[i] + 2 for i in head)
    blocks, block, used = [], [], start
    for i in range(len(head), len(widths)):
        if block and used + widths[i] > width:
            blocks.append(head + block)
            block, used = [], start
        block.append(i)
        used += widths[i] + 2
    return [*blocks, head + block]


def seed_summary(
    rows: Iterable[Mapping[str, Any]], group_by: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof 1; None for a single value) of each metric over
    the finished trials (rows) of each group, e.g. the seeds of one configuration; `n` counts
    them. Groups keep the order of their first trial."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("status") in (None, "TERMINATED"):
            groups.setdefault(tuple(row.get(k) for k in group_by), []).append(row)
    summary = []
    for key, members in groups.items():
        entry: dict[str, Any] = {**dict(zip(group_by, key)), "n": len(members)}
        for metric in metrics:
            values = np.array([r[metric] for r in members if r.get(metric) is not None], float)
            entry[f"{metric}_mean"] = float(values.mean()) if len(values) else None
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        summary.append(entry)
    return summary


def summary_table(entries: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Summary rows (possibly with different keys) as one table: the union of their columns."""
    columns = list(dict.fromkeys(key for entry in entries for key in entry))
    return pa.Table.from_pylist([{key: entry.get(key) for key in columns} for entry in entries])


def format_summary(
    summary: Sequence[Mapping[str, Any]], group_by: Sequence[str], metrics: Sequence[str],
    title: str = "",
) -> str:  # fmt: skip
    """The seed summary as text: the group columns, then `mean ± std` per metric."""

    def mean_std(entry: Mapping[str, Any], metric: str) -> str:
        mean, std = entry.get(f"{metric}_mean"), entry.get(f"{metric}_std")
        if mean is None:
            return "-"
        return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"

    if not summary:
        return f"{title}\n(no finished trials)" if title else "(no finished trials)"
    rows = [
        {**{k: entry[k] for k in group_by}, "n": entry["n"],
         **{metric: mean_std(entry, metric) for metric in metrics}}
        for entry in summary
    ]  # fmt: skip
    text = pa.Table.from_pylist([{k: _text(v) for k, v in row.items()} for row in rows])
    return format_table(text, [*group_by, "n", *metrics], title)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
