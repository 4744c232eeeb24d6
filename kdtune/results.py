"""The results table: one row per trial, written to and read from Parquet with pyarrow.

Text columns are fixed; every other column (hyperparameters, final metrics) is float64, so tables
from different studies concatenate. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kdtune.atomic import atomic_path

TEXT_COLUMNS = ("trial_id", "status", "error", "method", "mlflow_run_id", "node_id")
FLAG_COLUMNS = ("pareto",)


def _column_type(name: str) -> pa.DataType:
    if name in TEXT_COLUMNS:
        return pa.string()
    return pa.bool_() if name in FLAG_COLUMNS else pa.float64()


def to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts) to a table; scalar values only, non-numeric extras are dropped."""
    names: list[str] = list(TEXT_COLUMNS) + list(FLAG_COLUMNS)
    for row in rows:
        names += [k for k, v in row.items() if k not in names and isinstance(v, (int, float))]
    schema = pa.schema([(name, _column_type(name)) for name in names])
    clean = [{name: row.get(name) for name in names} for row in rows]
    return pa.Table.from_pylist(clean, schema=schema)


def write_table(table: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as temp:
        pq.write_table(table, temp)


def read_table(path: str | Path) -> pa.Table:
    return pq.read_table(path)


def format_table(table: pa.Table, columns: Sequence[str], title: str = "") -> str:
    """A plain-text table of the chosen columns (those present), floats to 4 decimals."""
    present = [c for c in columns if c in table.column_names]
    rows = table.select(present).to_pylist()

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return "-" if value is None else str(value)

    cells = [present] + [[cell(row[c]) for c in present] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(present))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(([title] if title else []) + lines)
