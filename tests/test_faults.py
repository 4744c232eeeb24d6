"""Issue 7, faults: real processes are killed mid-study and nothing finished is lost (slow)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from kdtune.config import Recipe
from tests.helpers.runs import assert_complete, record

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _latest_results(study_dir: Path) -> dict[str, dict]:
    """trial folder -> its last reported result (Tune's result.json, one JSON per line)."""
    latest = {}
    for path in study_dir.glob("tune_trainable_*/result.json"):
        lines = path.read_text().splitlines()
        if lines:
            latest[path.parent.name] = json.loads(lines[-1])
    return latest


def test_killed_trial_resumes_from_its_checkpoint(ray_local, tmp_path):
    import studies.temperature_sweep as study
    from kdtune.study import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = dataclasses.replace(
        study.SMOKE,
        scheduler="fifo",
        methods=("kd",),
        num_samples=2,
        front_seeds=1,
        max_failures=2,
        checkpoint_interval_s=0,
        recipe=Recipe(epochs=80),
        storage_path=str(tmp_path / "ray"),
    )
    outcome: dict = {}
    runner = threading.Thread(
        target=lambda: outcome.update(result=run_study(spec, tracking_uri=uri, log=lambda _: None))
    )
    runner.start()
    killed_pid = None
    deadline = time.time() + 120
    while killed_pid is None and time.time() < deadline:
        for result in _latest_results(tmp_path / "ray" / spec.name).values():
            if 10 <= result.get("epoch", 0) < 60:
                killed_pid = result["pid"]
                os.kill(killed_pid, signal.SIGKILL)
                break
        time.sleep(0.05)
    runner.join(timeout=300)
    assert killed_pid is not None, "no trial reached epoch 10 in time"
    table = outcome["result"].table.to_pylist()
    assert [r["status"] for r in table] == ["TERMINATED", "TERMINATED"]
    assert all(r["epoch"] == 80 for r in table)
    restarted = [r for r in table if r["pid"] != killed_pid]
    assert len(restarted) == 2  # the killed trial finished in another process
    client = MlflowClient(uri)
    children = client.search_runs(
        [client.get_run(outcome["result"].parent_run_id).info.experiment_id],
        filter_string="tags.`kdtune.trial_id` != ''",
    )
    assert sorted(c.data.tags["kdtune.trial_id"] for c in children) == sorted(
        r["trial_id"] for r in table
    )
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:  # the killed trial re-ran epochs after its checkpoint: logged once
        assert_complete(uri, child, epochs=80)


def test_killed_driver_resumes_without_rerunning_finished_trials(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable,
        str(ROOT / "studies" / "temperature_sweep.py"),
        "--smoke-test",
        "--name",
        "resumable",
        "--num-samples",
        "6",  # 4 still to come when the second launch checks: the first is surely running
        "--max-concurrent-trials",
        "1",
        "--epochs",
        "60",
        "--storage",
        str(tmp_path / "ray"),
        "--tracking-uri",
        uri,
        "--scheduler",
        "fifo",
        "--front-seeds",
        "1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    finished_before_kill = []
    for line in first.stdout:
        if line.startswith("trial ") and "/6 " in line:
            finished_before_kill.append(line.split()[2])
            if len(finished_before_kill) == 2:
                break
    # the same study again while this one runs: refused, the first one untouched
    twice = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert twice.returncode == 2 and "is running already" in twice.stderr, twice.stderr[-2000:]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert len(finished_before_kill) == 2

    second = subprocess.run(
        [*command, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    # only kdtune's own lines (no Ray, Tune, MLflow or Optuna notice without --verbose), and
    # the last ones name every file written and the command that shows them in MLflow
    assert second.stderr.strip() == ""
    for noise in ("Token authentication", "A new study created", "Creating initial MLflow",
                  "tensorboard", "Configuration for experiment"):  # fmt: skip
        assert noise not in second.stdout
    tail = second.stdout.strip().splitlines()[-14:]
    assert "  pareto.html" in tail and "  results.parquet" in tail
    assert tail[-2].startswith(f"See them:  kdtune ui --tracking-uri {uri}")
    study_dir = tmp_path / "ray" / "resumable"
    assert tail[-1].endswith(f"optuna.db there:  kdtune dashboard {study_dir}")
    table = pq.read_table(tmp_path / "ray" / "resumable" / "results.parquet").to_pylist()
    assert len(table) == 6 and len({r["trial_id"] for r in table}) == 6
    assert set(finished_before_kill) <= {r["trial_id"] for r in table}
    assert all(r["status"] == "TERMINATED" for r in table)
    # the same Optuna study went on: every Tune trial told once, none left running
    optuna_db = tmp_path / "ray" / "resumable" / "optuna.db"
    searched = optuna.load_study(study_name="resumable", storage=f"sqlite:///{optuna_db}")
    complete = searched.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert sorted(t.user_attrs["tune_trial_id"] for t in complete) == sorted(
        r["trial_id"] for r in table)  # fmt: skip
    assert not searched.get_trials(states=[optuna.trial.TrialState.RUNNING])
    parents, children = record(uri, "resumable")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["kdtune.trial_id"] for c in children) == sorted(
        r["trial_id"] for r in table
    )
    for child in children:  # each complete, the trials finished before the kill included
        assert_complete(uri, child, epochs=60)


def test_hundred_short_trials_eight_at_a_time_against_one_sqlite_store(ray_local, tmp_path):
    import studies.temperature_sweep as study
    from kdtune.study import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = dataclasses.replace(
        study.SMOKE, name="load", num_samples=100, max_concurrent_trials=8, cpus_per_trial=0.25,
        scheduler="fifo", front_seeds=1,
        recipe=Recipe(epochs=1), storage_path=str(tmp_path / "ray"),
    )  # fmt: skip
    result = run_study(spec, tracking_uri=uri, log=lambda _: None)
    rows = result.table.to_pylist()
    assert len(rows) == 100 and len({r["trial_id"] for r in rows}) == 100
    assert all(r["status"] == "TERMINATED" for r in rows)
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("load").experiment_id
    children = client.search_runs(
        [experiment_id], filter_string="tags.`kdtune.trial_id` != ''", max_results=1000
    )
    assert len(children) == 100
    assert len({c.data.tags["kdtune.trial_id"] for c in children}) == 100
    assert all(c.info.status == "FINISHED" for c in children)
