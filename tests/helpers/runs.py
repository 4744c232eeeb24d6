"""Study scripts as a user runs them: a real process, real signals, the record read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]


def sweep(tmp_path: Path, name: str, uri: str, *flags: str, trials: int = 4,
          epochs: int = 60) -> list[str]:  # fmt: skip
    """The temperature sweep's smoke study, one trial at a time, in `tmp_path/ray`, its
    `trials` and no more (no replicates of its front: `--front-seeds 1`)."""
    return [sys.executable, str(ROOT / "studies" / "temperature_sweep.py"), "--smoke-test",
            "--name", name, "--num-samples", str(trials), "--max-concurrent-trials", "1",
            "--epochs", str(epochs), "--storage", str(tmp_path / "ray"), "--tracking-uri", uri,
            "--scheduler", "fifo", "--front-seeds", "1", *flags]  # fmt: skip


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    """A study in its own process group (its Ray workers too), output line by line."""
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def finished_trials(process: subprocess.Popen, count: int) -> list[str]:
    """Read the study's output until `count` trials have ended; their ids."""
    ended = []
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("trial ") and "/" in line.split()[1]:
            ended.append(line.split()[2])
            if len(ended) == count:
                break
    return ended


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def record(uri: str, experiment: str) -> tuple[list, list]:
    """The experiment's parent runs and the child runs of the trials Tune knows (a trial the
    driver started just before it was killed, which Tune never saved, is tagged an orphan)."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    parents = [r for r in runs if "kdtune.trial_id" not in r.data.tags
               and "mlflow.parentRunId" not in r.data.tags]  # not a configuration's summary
    children = [r for r in runs if "kdtune.trial_id" in r.data.tags
                and "kdtune.orphan" not in r.data.tags]  # fmt: skip
    return parents, children


def assert_complete(uri: str, child, epochs: int) -> None:
    """A finished trial's child run holds every epoch once, its test metrics and its figure."""
    client = MlflowClient(uri)
    for metric in ("val_acc", "train_loss"):
        steps = [m.step for m in client.get_metric_history(child.info.run_id, metric)]
        assert sorted(steps) == list(range(1, epochs + 1)), (metric, steps)
    assert child.info.status == "FINISHED" and "test_acc" in child.data.metrics
    assert "reliability_test.png" in {a.path for a in client.list_artifacts(child.info.run_id)}
