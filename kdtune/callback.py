"""The Ray Tune callback that forwards every trial event to MLflow, from the driver only, and the
reconciliation that completes each trial's MLflow record from what Tune stored for it.

Workers never talk to MLflow: each report reaches the driver through Tune and is logged here
(through `tracking.StudyTracker`, the only MLflow code), with one line per ended trial (once
Tune's saved state holds its end: `SnapshotPacer`) and, in between, where the study stands
(`Progress`) and whether its trials wait for resources.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pyarrow.fs
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS

from kdtune.config import one_line
from kdtune.hparams import format_value
from kdtune.replicates import configuration_key
from kdtune.reports import expand, last_report
from kdtune.storage import ROUTE, SNAPSHOTS, launch_value, trial_links
from kdtune.tracking import CONFIG_TAG, METHOD_TAG, OPTUNA_TRIAL_TAG, STOPPED_TAG, StudyTracker

STEP_KEYS = ("epoch", "stage", "training_iteration")  # a report's x-axis, the first it has
TUNE_KEYS = frozenset((*AUTO_RESULT_KEYS, "done", "trial_id", "experiment_tag",
                       "should_checkpoint", "warmup_time"))  # fmt: skip
FINISHED_STATES = ("TERMINATED", "ERROR")  # Tune's statuses of a trial that ended
WAIT_NOTICE_S = 300.0  # how often to say that trials wait for resources
PROGRESS_S = 30.0  # how often a study's progress line is printed into a log (not a terminal)
STORE_RETRY_S = 120.0  # after the store failed, how long live logging waits before trying again


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


def short_of_budget(result: Mapping[str, Any], config: Mapping[str, Any]) -> int | None:
    """The epoch of an ended trial's last report when that is before its budget (the scheduler
    stopped it there); None when it ran its whole budget."""
    epoch, budget = result.get("epoch"), config.get("epochs")
    if epoch is None or budget is None or epoch >= budget:
        return None
    return int(epoch)


def stopped_at(trial: Any) -> int | None:
    """The epoch at which the scheduler stopped a trial that Tune counts as ended (TERMINATED)
    short of its budget; None for one that ran its whole budget or did not end."""
    if trial.status != "TERMINATED":
        return None
    return short_of_budget(last_report(trial.last_result), trial.config)


def trial_failure(trial: Any) -> str:
    """Why a Tune trial failed, from its pickled error or its error file."""
    error_file = getattr(trial, "error_file", None)
    text = Path(error_file).read_text() if error_file and Path(error_file).exists() else None
    return failure_reason(trial.get_pickled_error() or text)


@dataclass(frozen=True)
class Route:
    """Where this process records a study: store, parent run, the tags every run gets."""

    tracking_uri: str
    parent_run_id: str
    tags: Mapping[str, str]
    objectives: Sequence[str]  # the metrics each progress line shows
    num_trials: int
    # method -> the config keys that tell its trials apart, which name the child runs
    # ("kd T=4.2 w_kd=0.8"); "" for configs without a method
    label_keys: Mapping[str, Sequence[str]] = field(default_factory=dict)
    # trials started in this launch that have not ended: what an interrupt leaves running
    running: set[str] = field(default_factory=set)


def step_key(report: Mapping[str, Any]) -> str:
    return next((key for key in STEP_KEYS if key in report), STEP_KEYS[-1])


def own_metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    """What the trial reported, without Tune's bookkeeping (pid, timestamps, iteration
    counters), which would bury kdtune's metrics in MLflow's column picker."""
    keep = step_key(report)
    return {k: v for k, v in report.items() if k == keep or k not in TUNE_KEYS}


SHORT_NAMES = {"temperature": "T"}  # in run names, where the full name is long and familiar


def run_name(config: Mapping[str, Any], label_keys: Mapping[str, Sequence[str]]) -> str:
    """A child run's name, what the runs list shows: the method and the values that tell its
    trial apart ("kd T=4.2 w_kd=0.8")."""
    method = str(config.get("method", ""))
    keys = label_keys.get(method, label_keys.get("", ()))
    values = [f"{SHORT_NAMES.get(k, k)}={f'{v:.3g}' if isinstance(v, float) else format_value(v)}"
              for k in keys if (v := config.get(k)) is not None]  # fmt: skip
    return " ".join([method, *values]).strip() or "trial"


# A snapshot forced by a trial's change waits until the last snapshot is this many times its own
# duration old, so that forced snapshots take at most ~5% of the driver (Tune's own ratio for its
# periodic ones). A snapshot writes every trial's state: ~30 KB a trial, 0.2-0.5 s at 1,000 trials
# (bench.driver_scale), which forced at every trial's start and end would be most of the driver.
SNAPSHOT_GAP = 19.0


class SnapshotPacer:
    """Have Tune save its experiment state soon after a trial was added or ended, and say when
    such a save has reached the study folder. Tune saves it at most every 10 s by itself, so a
    driver killed soon after a trial was added or ended came back, on --resume, to a state that
    did not know: a trial it had printed as ended ran again, one it had started was forgotten
    (its MLflow run an orphan, its Optuna trial asked twice).

    A save is forced in the step of the change if the last save is SNAPSHOT_GAP times its own
    duration old, else at the next trial event or driver step after that (or by Tune's periodic
    save): a few seconds at most at 1,000 trials, at once in a study of hundreds of trials of
    minutes each. Tune writes a save into the driver's staging folder and copies it to the study
    folder in a thread of its own; `stored_since` is true once a save begun after a moment has
    been copied, which is when the tracking callback prints a trial's end.

    Tune gives schedulers its controller (or a wrapper of it) but no public way to ask for a save,
    nor the save's duration or copy; its own flag for a forced save is set, and its own record
    of each save's duration and copy is read, where they exist (else nothing is paced or held).
    One pacer serves a launch (`storage.SNAPSHOTS`): the scheduler paces it, the callback asks."""

    def __init__(self) -> None:
        self.due = False  # a change no save has included yet
        self.last_save_s = 0.0  # how long the last save took
        self._manager: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"due": self.due, "last_save_s": self.last_save_s, "_manager": None}

    def changed(self, tune_controller: Any) -> None:
        self.due = True
        self.pace(tune_controller)

    def pace(self, tune_controller: Any = None) -> None:
        """Force a save in this step if one is due and the last one is old enough."""
        manager = self._attach(tune_controller)
        if not self.due or manager is None:
            return
        if time.monotonic() - manager._last_save_time >= SNAPSHOT_GAP * self.last_save_s:
            manager._should_force_sync_up = True
            self.due = False

    def stored_since(self, moment: float) -> bool:
        """Whether a save begun after `moment` (time.monotonic) is in the study folder: Tune
        launched its copy after that save, and no copy is under way."""
        manager = self._manager
        if manager is None:
            return True  # nothing to wait for: no pacing scheduler, or Tune's internals moved
        copied_at = manager._last_sync_time  # when the copy of the latest save began
        return (copied_at is not None and copied_at > moment
                and not manager._storage.syncer._should_continue_existing_sync())

    def _attach(self, tune_controller: Any) -> Any:
        if self._manager is None and tune_controller is not None:
            controller = getattr(tune_controller, "_tune_controller", tune_controller)
            manager = getattr(controller, "_checkpoint_manager", None)
            needed = ("_should_force_sync_up", "_last_save_time", "_update_auto_checkpoint_time",
                      "_last_sync_time")  # fmt: skip
            syncer = getattr(getattr(manager, "_storage", None), "syncer", None)
            if (manager is None or not all(hasattr(manager, name) for name in needed)
                    or not hasattr(syncer, "_should_continue_existing_sync")):
                return None
            measure = manager._update_auto_checkpoint_time

            def measured(time_taken: float) -> None:
                self.last_save_s = time_taken
                measure(time_taken)

            manager._update_auto_checkpoint_time = measured
            self._manager = manager
        return self._manager


def launch_pacer(study: str) -> SnapshotPacer | None:
    """The pacer of the study's running launch (`runner.fit_trials` puts one), or None."""
    pacer = launch_value(SNAPSHOTS, study)
    return pacer if isinstance(pacer, SnapshotPacer) else None


class Progress:
    """A running study's account at a steady cadence: trials done, running and waiting, each
    running trial's epoch and latest objectives, and the time left. On a terminal it is one line
    redrawn every second with a bar; in a log, a line every PROGRESS_S."""

    def __init__(self, num_trials: int, objectives: Sequence[str], tty: bool) -> None:
        self.num_trials, self.objectives, self.tty = num_trials, list(objectives), tty
        self.started = time.monotonic()
        self.said_at = self.started
        self.done_at_start: float | None = None  # work already done when this process began
        self.shown = False  # a bar is on screen, to be cleared before other output

    def due(self) -> bool:
        return time.monotonic() - self.said_at >= (1.0 if self.tty else PROGRESS_S)

    def line(self, trials: Sequence[Any]) -> str:
        self.said_at = time.monotonic()
        ended = sum(t.status in FINISHED_STATES for t in trials)
        running = [t for t in trials if t.status == "RUNNING"]
        waiting = self.num_trials - ended - len(running)
        now = ", ".join(self._trial_now(t) for t in running[:4])
        left = self._time_left(trials, ended)
        text = (f"{ended}/{self.num_trials} trials done, {len(running)} running, {waiting} to "
                f"come{f' | {now}' if now else ''} | {_clock(self.said_at - self.started)} "
                f"elapsed{f', about {_clock(left)} left' if left is not None else ''}")
        if not self.tty:
            return f"progress: {text}"
        filled = round(20 * ended / max(self.num_trials, 1))
        return f"[{'#' * filled}{'-' * (20 - filled)}] {text}"

    def _trial_now(self, trial: Any) -> str:
        result = last_report(trial.last_result)
        epochs = trial.config.get("epochs")
        at = f"epoch {result.get('epoch', 0)}/{epochs}" if epochs else "started"
        scores = " ".join(f"{m} {result[m]:.4f}" for m in self.objectives if m in result)
        return f"{trial.trial_id} {trial.config.get('method', '')} {at} {scores}".strip()

    def _time_left(self, trials: Sequence[Any], ended: int) -> float | None:
        """From the work done since this process began: epochs where trials have them (a
        finished trial counts all of its own), else whole trials."""
        epochs = next((t.config.get("epochs") for t in trials if t.config.get("epochs")), None)
        if epochs:
            done = sum(epochs if t.status in FINISHED_STATES else
                       last_report(t.last_result).get("epoch", 0) for t in trials)  # fmt: skip
            total = epochs * self.num_trials
        else:
            done, total = ended, self.num_trials
        if self.done_at_start is None:
            self.done_at_start = done
        rate = (done - self.done_at_start) / max(time.monotonic() - self.started, 1e-9)
        return (total - done) / rate if rate > 0 else None


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class TrackingCallback(tune.Callback):
    """Forwards every trial event to MLflow from the driver. Tune pickles it for resume; only the
    experiment's name goes in the pickle (see `storage.for_this_launch`).

    A store that fails mid-study (a full disk, a server gone) does not stop the trials, which
    may be hours of GPU each: the callback says so once and goes on, and `reconcile` completes
    the record from Tune's at the end or on --resume."""

    def __init__(self, experiment: str) -> None:
        self.experiment = experiment
        self._tracker: StudyTracker | None = None
        self._store_failed, self._retry_at = False, 0.0
        self._starved_since: float | None = None  # no trial running, some waiting, since
        self._starved_said = 0.0
        self._progress_line: Progress | None = None
        # ended trials' lines (when each ended, the line), each printed once Tune's state in the
        # study folder holds the end: what a killed driver printed is then what --resume finds
        self._held: list[tuple[float, str]] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"experiment": self.experiment}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["experiment"])  # type: ignore[misc]

    @property
    def route(self) -> Route:
        where = launch_value(ROUTE, self.experiment)
        if where is None:
            raise KeyError(f"no MLflow route for {self.experiment!r} in this launch")
        return cast(Route, where)

    @property
    def tracker(self) -> StudyTracker:
        if self._tracker is None:
            self._tracker = StudyTracker(self.experiment, self.route.tracking_uri)
            self._tracker.parent_run_id = self.route.parent_run_id
        return self._tracker

    def _record(self, write: Callable[[], None]) -> None:
        if self._store_failed and time.monotonic() < self._retry_at:
            return  # a store that failed is left alone a while: each try can block minutes
        try:
            write()
        except Exception as error:  # the store's: the trials must go on
            if not self._store_failed:
                print(f"mlflow: the store failed ({one_line(error)}); the trials go on, and "
                      "the record is completed from Tune's when the study ends or resumes",
                      flush=True)  # fmt: skip
            self._store_failed, self._retry_at = True, time.monotonic() + STORE_RETRY_S

    def _run(self, trial: Any, key: str = STEP_KEYS[0]) -> str:
        return trial_run(self.tracker, trial, self.route, key)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.route.running.add(trial.trial_id)
        self._record(lambda: self._run(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        def write() -> None:
            self._run(trial, step_key(result))
            for report in expand(result):
                step = int(report[step_key(report)])
                self.tracker.log_trial(trial.trial_id, own_metrics(report), step=step)

        self._record(write)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = last_report(trial.last_result)
        stopped = short_of_budget(result, trial.config)

        def write() -> None:
            self._run(trial)
            if stopped is not None:
                self.tracker.tag_trial(trial.trial_id, {STOPPED_TAG: str(stopped)})
            self.tracker.end_trial(trial.trial_id, "FINISHED", result.get("test_reliability"))

        self._record(write)
        scores = "  ".join(f"{m} {result.get(m, float('nan')):.4f}" for m in self.route.objectives)
        budget = trial.config.get("epochs")
        early = "" if stopped is None else f", stopped at epoch {stopped} of {budget}"
        self._progress(trials, trial, f"{scores}  ({result.get('time_total_s', 0):.1f} s{early})")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        reason = trial_failure(trial)

        def write() -> None:
            self._run(trial)
            self.tracker.end_trial(trial.trial_id, "FAILED", failure=reason)

        self._record(write)
        self._progress(trials, trial, f"FAILED: {reason} (details: {trial.error_file})")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune calls this after each turn of its loop, ~0.1 s apart while no trial reports: the
        # cadence between trial events. Ray has no on_step; a misnamed hook is silently never run
        if self._progress_line is None:
            self._progress_line = Progress(self.route.num_trials, self.route.objectives,
                                           sys.stdout.isatty())  # fmt: skip
        self._print_stored()
        progress = self._progress_line
        if progress.due():
            text = progress.line(trials)
            print(f"\r\033[K{text}" if progress.tty else text, end="" if progress.tty else "\n",
                  flush=True)  # fmt: skip
            progress.shown = progress.tty
        self._starved(trials)

    def _starved(self, trials: list) -> None:
        """Trials that wait for resources while none runs (an autoscaler adding nodes, or
        never): say so every WAIT_NOTICE_S, with what they ask for and for how long."""
        waiting = [t for t in trials if t.status == "PENDING"]
        if not waiting or any(t.status == "RUNNING" for t in trials):
            self._starved_since = None
            return
        now = time.monotonic()
        if self._starved_since is None:
            self._starved_since = self._starved_said = now
        if now - self._starved_said >= WAIT_NOTICE_S:
            self._starved_said = now
            asks = waiting[0].placement_group_factory.required_resources
            print(f"ray: {len(waiting)} trials have waited {(now - self._starved_since) / 60:.0f} "
                  f"min for resources; each asks {asks} (Ctrl-C stops the study)", flush=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._print(len(self._held))  # Tune saved and copied its state just before (or failed)
        if self._progress_line is not None and self._progress_line.shown:
            print("\r\033[K", end="", flush=True)
        if self._tracker is not None:  # an interrupted study's unfinished trials, too
            self._record(self._tracker.flush_all)

    def _progress(self, trials: list, trial: Any, text: str) -> None:
        self.route.running.discard(trial.trial_id)  # it ended (complete or failed)
        # the trial that ends now may not carry its final status yet
        ended = sum(t.status in FINISHED_STATES for t in trials if t is not trial) + 1
        self._held.append((time.monotonic(), f"trial {ended}/{self.route.num_trials} "
                           f"{trial.trial_id} {trial.config.get('method', '')}: {text}"))

    def _print_stored(self) -> None:
        """Print the held lines whose trial's end Tune's state in the study folder holds; ask
        for the save that holds the others if it is due."""
        pacer = launch_pacer(self.experiment)
        if pacer is None:
            self._print(len(self._held))
            return
        pacer.pace()
        self._print(sum(pacer.stored_since(moment) for moment, _ in self._held))

    def _print(self, count: int) -> None:
        """Print the first `count` held lines (the oldest: they are stored first)."""
        if not count:
            return
        if self._progress_line is not None and self._progress_line.shown:
            print("\r\033[K", end="")  # the progress bar is redrawn after these lines
            self._progress_line.shown = False
        print("\n".join(line for _, line in self._held[:count]), flush=True)
        del self._held[:count]


def stored_reports(trial: Any, filesystem: pyarrow.fs.FileSystem) -> list[dict[str, Any]]:
    """Every report Tune stored for a trial (its result.json), expanded, each step once (a
    trial restarted from a checkpoint reports again the epochs after it: the first count)."""
    try:
        with filesystem.open_input_stream(f"{trial.path}/result.json") as stream:
            lines = stream.readall().decode().splitlines()
    except (FileNotFoundError, OSError):
        return []
    reports: dict[int, dict[str, Any]] = {}
    for line in filter(None, lines):
        for report in expand(json.loads(line)):
            reports.setdefault(int(report.get(step_key(report), 0)), report)
    return [reports[step] for step in sorted(reports)]


def trial_run(tracker: StudyTracker, trial: Any, route: Route, key: str) -> str:
    """A Tune trial's child run: tagged with its method, the study's tags and the number of the
    Optuna trial that asked it (if one did; the searcher hears of the run: `TrialLinks`), named
    by its configuration, its params the whole resolved config."""
    tags = {METHOD_TAG: str(trial.config.get("method", "")),
            CONFIG_TAG: configuration_key(trial.config), **route.tags}
    links = trial_links(tracker.experiment_name)
    if links is not None and trial.trial_id in links.numbers:
        tags[OPTUNA_TRIAL_TAG] = str(links.numbers[trial.trial_id])
    run_id = tracker.trial_run(trial.trial_id, trial.config, tags, key,
                               name=run_name(trial.config, route.label_keys))  # fmt: skip
    if links is not None:
        links.runs[trial.trial_id] = run_id
    return run_id


def reconcile(trials: Iterable[Any], filesystem: pyarrow.fs.FileSystem, tracker: StudyTracker,
              route: Route) -> int:  # fmt: skip
    """Make every trial's child run complete from what Tune stored for it: the reports a killed
    driver had buffered, the whole record when the study resumes into another store, the end
    of a trial that finished while no driver was listening. Writes only what is missing;
    returns how many reports it wrote. A child run of a trial Tune does not know (the driver
    died after starting it, before Tune saved its state) is tagged an orphan."""
    written = 0
    known = tracker.trial_runs()
    trials = list(trials)
    for trial_id in set(known) - {trial.trial_id for trial in trials}:
        tracker.mark_orphan(known[trial_id])
    for trial in trials:
        reports = stored_reports(trial, filesystem)
        if not reports and trial.status not in FINISHED_STATES and trial.trial_id not in known:
            continue  # never started: nothing to record
        key = step_key(reports[0]) if reports else STEP_KEYS[0]
        run_id = trial_run(tracker, trial, route, key)
        logged = tracker.logged_steps(run_id, key)
        for report in reports:
            step = int(report.get(key, 0))
            if step not in logged:
                tracker.log_trial(trial.trial_id, own_metrics(report), step=step)
                written += 1
        tracker.flush(trial.trial_id)
        if stopped_at(trial) is not None:
            tracker.tag_trial(trial.trial_id, {STOPPED_TAG: str(stopped_at(trial))})
        # a trial still running when the study stopped is KILLED until --resume continues it
        ended = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}.get(trial.status, "KILLED")
        if tracker.run_status(run_id) != ended:
            reason = trial_failure(trial) if ended == "FAILED" else None
            last = reports[-1] if reports else {}
            tracker.end_trial(trial.trial_id, ended, last.get("test_reliability"), reason)
    return written
