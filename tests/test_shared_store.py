"""Issue 27: studies started together on one new MLflow store. MLflow creates and migrates a
sqlite store on first use, and two processes doing it at once collide (`duplicate column name:
step`, `Online migration expected to match one row`); kdtune serialises that first use."""

from __future__ import annotations

import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.runs import ROOT, record, start


@pytest.mark.slow
def test_four_studies_started_together_share_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    names = [f"s{i}" for i in range(4)]
    began = time.monotonic()
    studies = [start([sys.executable, str(ROOT / "studies" / "temperature_sweep.py"),
                      "--smoke-test", "--name", name, "--storage", str(tmp_path / "ray"),
                      "--tracking-uri", uri], tmp_path) for name in names]  # fmt: skip
    outputs = [study.communicate(timeout=600)[0] for study in studies]
    for study, output in zip(studies, outputs):
        assert study.returncode == 0, output[-3000:]
    for name in names:
        parents, children = record(uri, name)
        assert [p.info.status for p in parents] == ["FINISHED"], name
        rows = pq.read_table(tmp_path / "ray" / name / "results.parquet").num_rows
        assert len(children) == rows >= 2  # its 2 searched trials and its front's replicates
        assert {c.info.status for c in children} == {"FINISHED"}
    print(f"4 studies in {time.monotonic() - began:.0f} s")


@pytest.mark.slow
def test_processes_opening_a_new_store_at_once_all_succeed(tmp_path):
    """The same race without Ray, fast: four processes check and open one new store."""
    code = ("import sys; from kdtune.tracking import StudyTracker, check_store; "
            "StudyTracker(sys.argv[2], check_store(sys.argv[1]))")  # fmt: skip
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    processes = [subprocess.Popen([sys.executable, "-c", code, uri, f"s{i}"], cwd=ROOT,
                                  stderr=subprocess.PIPE, text=True) for i in range(4)]  # fmt: skip
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, errors
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert names >= {f"s{i}" for i in range(4)}
