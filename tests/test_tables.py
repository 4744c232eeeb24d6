"""The results table and the seed summaries studies report (mean ± std over seeds)."""

from __future__ import annotations

import math

import pytest

from kdtune import tables


def _rows():
    return [
        {"trial_id": "a", "status": "TERMINATED", "method": "kd", "alpha": 1.0, "acc": 0.90},
        {"trial_id": "b", "status": "TERMINATED", "method": "kd", "alpha": 1.0, "acc": 0.80},
        {"trial_id": "c", "status": "ERROR", "method": "kd", "alpha": 1.0, "acc": 0.10},
        {"trial_id": "d", "status": "TERMINATED", "method": "ce", "acc": 0.70,
         "augmentation": "cutmix", "bins": [1, 2]},
    ]  # fmt: skip


def test_table_keeps_names_as_text_numbers_as_floats_and_drops_lists():
    table = tables.to_table(_rows())
    assert table.schema.field("augmentation").type == "string"
    assert table.schema.field("alpha").type == "double"
    assert "bins" not in table.column_names
    assert table.column("augmentation").to_pylist() == [None, None, None, "cutmix"]
    assert table.column("alpha").to_pylist() == [1.0, 1.0, 1.0, None]


def test_seed_summary_by_hand():
    rows = tables.to_table(_rows()).to_pylist()  # through the table: what studies summarise
    summary = tables.seed_summary(rows, ["method", "alpha"], ["acc"])
    kd, ce = summary  # groups in the order of their first trial; the failed trial is left out
    assert (kd["method"], kd["alpha"], kd["n"]) == ("kd", 1.0, 2)
    assert kd["acc_mean"] == pytest.approx(0.85)
    assert kd["acc_std"] == pytest.approx(math.sqrt(((0.05**2) * 2) / 1))  # ddof = 1
    assert (ce["alpha"], ce["n"], ce["acc_mean"], ce["acc_std"]) == (None, 1, 0.70, None)


def test_format_summary_writes_mean_plus_minus_std():
    summary = tables.seed_summary(tables.to_table(_rows()).to_pylist(), ["method"], ["acc"])
    text = tables.format_summary(summary, ["method"], ["acc"], title="t")
    assert "0.8500 ± 0.0707" in text and "0.7000" in text and text.startswith("t\n")
    assert "no finished trials" in tables.format_summary([], ["method"], ["acc"])
