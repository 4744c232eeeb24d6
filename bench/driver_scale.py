"""The driver at cluster scale: a simulated study of 1,000 trials of 30 epochs, 64 at once.

The default study run by `run_study` with `simulate` (the learning-curve blackbox replayed by
Ray Tune trials on 64 declared GPUs, `kdtune.simulate`), every trial its full budget (FIFO), so
that every epoch of every trial reaches the driver: the searcher, the tracking callback and its
MLflow store, Tune's experiment snapshots, the outcome at the end, all as in a real study. The
trials are faster than any driver (64 trials reporting every `--epoch-s`), so what is measured
is the driver's capacity:

- results per second: trial-epochs recorded in MLflow per second, sustained (from the 10th to
  the 90th percentile of the trials' end times);
- the driver's memory (resident set, sampled every second): the most after the last trial
  ended over the most when a tenth of the trials had;
- an Optuna ask (the study's sampler and define-by-run space, on an SQLite store like the
  study's) with 100, 500 and 1,000 trials in the study;
- Tune's experiment snapshots written (`TuneController.save_to_dir`, every trial's state and
  the searcher's): how many, median, most and total seconds;
- the end of the study: tables, front, figures and importance, from the last trial's end to
  `run_study`'s return;
- what was lost: child runs, val_acc points and rows missing against what the trials ran.

    python -m bench.driver_scale            # 1,000 trials, 64 at once (~8 min on 2 cores)
    python -m bench.driver_scale --quick    # 64 trials, 16 at once (CI)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from bench.common import table, write_result
from kdtune.blackbox import DEFAULT_PATH


class MemorySampler:
    """This process's resident set and CPU time every `every_s` seconds, in a thread: (time,
    bytes, CPU seconds)."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.samples: list[tuple[float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        process = psutil.Process()
        while not self._stop.is_set():
            cpu = process.cpu_times()
            self.samples.append((time.time(), process.memory_info().rss, cpu.user + cpu.system))
            self._stop.wait(every_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def most_between(self, start: float, end: float) -> int:
        return max((rss for t, rss, _ in self.samples if start <= t <= end), default=0)

    def cpu_between(self, start: float, end: float) -> float:
        within = [cpu for t, _, cpu in self.samples if start <= t <= end]
        return within[-1] - within[0] if len(within) > 1 else float("nan")


def timed(owner: Any, name: str, durations: list[float]) -> Callable[[], None]:
    """Wrap `owner.name` to append each call's seconds to `durations`; returns the undo."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            durations.append(time.perf_counter() - start)

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


def ask_seconds(spec: Any, optuna_db: Path, sizes: Sequence[int], folder: Path) -> dict[str, float]:
    """The median time of an ask (the study's sampler, the define-by-run space) with the first
    n trials of the finished study in a fresh SQLite store, for each n."""
    import optuna

    from kdtune.search import DefineByRun, make_sampler
    from kdtune.study import study_declarations

    finished = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{optuna_db}")
    trials = finished.get_trials(deepcopy=False)
    space = DefineByRun(spec, study_declarations(spec))
    found = {}
    for n in sizes:
        study = optuna.create_study(storage=f"sqlite:///{folder / f'ask_{n}.db'}",
                                    directions=finished.directions,
                                    sampler=make_sampler(spec, seed=n))  # fmt: skip
        study.add_trials(trials[:n])
        times = []
        for _ in range(5):
            start = time.perf_counter()
            trial = study.ask()
            space(trial)
            times.append(time.perf_counter() - start)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        found[str(n)] = statistics.median(times)
    return found


def recorded(tracking_uri: str, parent_run_id: str) -> tuple[int, int, list[float]]:
    """Child runs of the parent, their val_acc points, and their end times (s), read from the
    MLflow store's tables."""
    path = tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        children = [row[0] for row in db.execute(
            "SELECT run_uuid FROM tags WHERE key = 'mlflow.parentRunId' AND value = ?",
            (parent_run_id,))]  # fmt: skip
        marks = ",".join("?" * len(children))
        points = db.execute(f"SELECT COUNT(*) FROM metrics WHERE key = 'val_acc' AND run_uuid "
                            f"IN ({marks})", children).fetchone()[0]  # fmt: skip
        ends = [row[0] / 1000 for row in db.execute(
            f"SELECT end_time FROM runs WHERE run_uuid IN ({marks})", children)]  # fmt: skip
    return len(children), points, sorted(ends)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 trials, 16 at once (CI)")
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=64)
    parser.add_argument("--epoch-s", type=float, default=0.1,
                        help="the simulated epoch (default 0.1 s: 640 reports/s offered)")
    parser.add_argument("--blackbox", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    from ray.tune.execution.tune_controller import TuneController

    import studies.temperature_sweep as study
    from kdtune.cluster import set_verbosity
    from kdtune.study import run_study

    if args.quick:
        args.trials, args.concurrent = 64, 16
    folder = Path(tempfile.mkdtemp(prefix="kdtune_driver_scale_"))
    spec = dataclasses.replace(
        study.SPEC, name="driver_scale", num_samples=args.trials, scheduler="fifo", front_seeds=1,
        max_concurrent_trials=args.concurrent, gpus_per_trial=1.0, simulate=str(args.blackbox),
        simulate_epoch_s=args.epoch_s, storage_path=str(folder / "ray_results"))  # fmt: skip
    set_verbosity(False)
    logging.getLogger("ray").setLevel(logging.ERROR)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    snapshots: list[float] = []
    undo = timed(TuneController, "save_to_dir", snapshots)
    lines: list[tuple[float, str]] = []
    began = time.time()
    try:
        with MemorySampler() as memory:
            result = run_study(spec, tracking_uri=uri,
                               log=lambda line: lines.append((time.time(), line)))  # fmt: skip
            returned = time.time()
    finally:
        undo()
    children, points, ends = recorded(uri, result.parent_run_id)
    epochs = spec.recipe.epochs
    first, last = ends[int(0.1 * (len(ends) - 1))], ends[int(0.9 * (len(ends) - 1))]
    trials_between = int(0.9 * (len(ends) - 1)) - int(0.1 * (len(ends) - 1))
    results_per_s = trials_between * epochs / max(last - first, 1e-9)
    # what the driver itself costs: on a shared 2-core machine its 64 workers, Ray's own
    # processes and it take turns on the cores, so the wall-clock rate understates a driver
    # that has a core of its own (a cluster's head node)
    per_cpu_s = trials_between * epochs / memory.cpu_between(first, last)
    tenth = ends[max(len(ends) // 10 - 1, 0)]
    memory_ratio = memory.most_between(ends[-1], returned) / memory.most_between(began, tenth)
    sizes = [n for n in ((16, 32, 64) if args.quick else (100, 500, 1000)) if n <= args.trials]
    asks = ask_seconds(spec, result.study_dir / "optuna.db", sizes, folder)
    lost = {"child_runs": args.trials - children, "val_acc_points": args.trials * epochs - points,
            "rows": args.trials - result.table.num_rows}  # fmt: skip
    payload = {
        "trials": args.trials, "concurrent": args.concurrent, "epochs": epochs,
        "epoch_s": args.epoch_s, "results_per_s": results_per_s,
        "results_per_driver_cpu_s": per_cpu_s,
        "trial_phase_s": ends[-1] - began, "end_of_study_s": returned - ends[-1],
        "memory_mb": {"at_a_tenth": memory.most_between(began, tenth) / 1e6,
                      "at_the_end": memory.most_between(ends[-1], returned) / 1e6},
        "memory_ratio": memory_ratio, "ask_s": asks,
        "snapshot_s": {"count": len(snapshots), "median": float(np.median(snapshots)),
                       "most": float(max(snapshots)), "total": float(sum(snapshots))},
        "lost": lost, "ratio": results_per_s / 50.0}  # fmt: skip
    print(table([
        ("measure", "found", "goal"),
        ("results/s, sustained", f"{results_per_s:.1f}", ">= 50"),
        ("results per CPU-second of the driver", f"{per_cpu_s:.1f}", ""),
        *[(f"Optuna ask at {n} trials", f"{s:.3f} s", "< 1 s") for n, s in asks.items()],
        ("driver memory, end / a tenth in", f"{memory_ratio:.2f}x", "<= 2x"),
        ("Tune snapshots written", f"{len(snapshots)}, median "
         f"{np.median(snapshots) * 1000:.0f} ms, most {max(snapshots):.2f} s, total "
         f"{sum(snapshots):.0f} s", ""),
        ("trial phase", f"{ends[-1] - began:.0f} s", ""),
        ("end of study (tables, figures, importance)", f"{returned - ends[-1]:.1f} s", ""),
        ("lost: child runs, val_acc points, rows", ", ".join(str(v) for v in lost.values()),
         "0, 0, 0"),
    ]))  # fmt: skip
    print(f"{args.trials} simulated trials, {args.concurrent} at once: results per second / "
          f"the goal's 50 = {results_per_s / 50:.2f}x")  # fmt: skip
    print(f"wrote {write_result('driver_scale', torch.device('cpu'), payload, quick=args.quick)}")
    return payload


if __name__ == "__main__":
    main()
