"""The Ray Tune callback that forwards every trial event to MLflow, from the driver only.

Workers never talk to MLflow: each report reaches the driver through Tune and is logged here
(through `tracking.StudyTracker`, the only MLflow code), with one progress line per ended trial.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import tune

from kdtune.tracking import METHOD_TAG, StudyTracker
from kdtune.trainable import EPOCH_HISTORY


def failure_reason(error: BaseException | str | None) -> str:
    """The user-facing line of a trial's error: the original exception, not Ray's wrapper."""
    if isinstance(error, str):  # the text of Tune's error.txt: the exception is its last line
        lines = [line for line in error.splitlines() if line.strip()]
        return lines[-1].strip()[:500] if lines else "unknown error"
    cause = getattr(error, "cause", None) or error
    if cause is None:
        return "unknown error"
    lines = str(cause).strip().splitlines() or [""]
    return f"{type(cause).__name__}: {lines[-1] if 'Traceback' in lines[0] else lines[0]}"[:500]


def _error_file_text(path: str | None) -> str | None:
    return Path(path).read_text() if path and Path(path).exists() else None


class TrackingCallback(tune.Callback):
    """Forwards every trial event to MLflow from the driver. Picklable (Tune saves it for resume):
    the MLflow client is rebuilt lazily after unpickling."""

    def __init__(
        self, experiment: str, tracking_uri: str, parent_run_id: str, tags: dict[str, str],
        objectives: Sequence[str], num_trials: int,
    ) -> None:  # fmt: skip
        self.experiment, self.tracking_uri = experiment, tracking_uri
        self.parent_run_id, self.tags = parent_run_id, tags
        self.objectives = list(objectives)  # the metrics each progress line shows
        self.num_trials = num_trials
        self.ended = 0
        self._tracker: StudyTracker | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tracker": None}

    @property
    def tracker(self) -> StudyTracker:
        if self._tracker is None:
            self._tracker = StudyTracker(self.experiment, self.tracking_uri)
            self._tracker.parent_run_id = self.parent_run_id
        return self._tracker

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tags = {METHOD_TAG: trial.config.get("method", ""), **self.tags}
        self.tracker.trial_run(trial.trial_id, trial.config, tags)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.on_trial_start(iteration, trials, trial)
        # the x-axis of the metric histories: the epoch of a training, the stage of a
        # self-distillation chain, else the report's number
        for earlier in json.loads(result.get(EPOCH_HISTORY) or "[]"):
            self.tracker.log_trial(trial.trial_id, earlier, step=int(earlier["epoch"]))
        step = result.get("epoch", result.get("stage", result.get("training_iteration", 0)))
        self.tracker.log_trial(trial.trial_id, result, step=int(step))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_start(iteration, trials, trial)
        result = trial.last_result or {}
        self.tracker.end_trial(trial.trial_id, "FINISHED", result.get("test_reliability"))
        scores = "  ".join(f"{m} {result.get(m, float('nan')):.4f}" for m in self.objectives)
        self._progress(trial, f"{scores}  ({result.get('time_total_s', 0):.1f} s)")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_start(iteration, trials, trial)
        reason = failure_reason(trial.get_pickled_error() or _error_file_text(trial.error_file))
        self.tracker.end_trial(trial.trial_id, "FAILED", failure=reason)
        self._progress(trial, f"FAILED: {reason} (details: {trial.error_file})")

    def _progress(self, trial: Any, text: str) -> None:
        self.ended += 1
        print(f"trial {self.ended}/{self.num_trials} {trial.trial_id} "
              f"{trial.config.get('method', '')}: {text}", flush=True)  # fmt: skip
