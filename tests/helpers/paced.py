"""Trials of a known length through kdtune's real runner (Tune, its controller, the MLflow
callback), for what a study says while its trials run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# a log's progress line: trials done, running and to come
PROGRESS_LINE = re.compile(r"progress: (\d+)/(\d+) trials done, (\d+) running, (\d+) to come")


def paced_trials(tmp_path: Path, name: str, *, epoch_s: float, epochs: int = 3,
                 cpus_per_trial: float = 1.0, trials: int = 2) -> Any:  # fmt: skip
    """`trials` trials (two by default), each `epochs` reports `epoch_s` apart, two at a time if
    the CPUs allow; the study folder is tmp_path / "ray" / name."""
    from kdtune.runner import run_trials

    def paced(config: dict[str, Any]) -> None:
        import time

        from ray import tune

        for epoch in range(1, config["epochs"] + 1):
            time.sleep(config["epoch_s"])
            tune.report({"epoch": epoch, "val_acc": 0.5 + epoch / 100})

    points = [{"epochs": epochs, "epoch_s": epoch_s, "seed": seed} for seed in range(trials)]
    return run_trials(name, paced, points, params={}, storage_path=str(tmp_path / "ray"),
                      tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                      cpus_per_trial=cpus_per_trial, progress_metrics=["val_acc"],
                      label_keys=["seed"], log=lambda _: None)  # fmt: skip


def progress_counts(out: str) -> list[tuple[int, int, int, int]]:
    """(done, of, running, to come) of each progress line in `out`, in order."""
    return [tuple(map(int, m.groups())) for m in PROGRESS_LINE.finditer(out)]  # type: ignore[misc]
