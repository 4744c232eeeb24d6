"""Platform overhead: N identical trials through run_study (Ray Tune + Optuna + MLflow) vs the
same N trainings called one after another in a plain Python loop, in this process.

Both use the same cached teacher, the same config (every searched hyperparameter pinned), one
trial at a time with 2 CPU threads. Reports the ratio of wall times (Ray's start-up shown
apart), the time per trial spent outside training, and the first trial's start latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from bench.common import table, write_result
from kdtune.config import Recipe, StudySpec
from kdtune.data import load_dataset
from kdtune.storage import StudyStorage
from kdtune.teacher import get_teacher
from kdtune.trainable import TrialContext, run_trial

PINNED = {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 trials of ~4 s (CI)")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1000, help="~30 s per digits trial on 2 CPUs")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 3, 60
    folder = Path(tempfile.mkdtemp(prefix="kdtune_overhead_"))
    spec = StudySpec(
        name="overhead",
        methods=("kd",),
        fixed=PINNED,
        num_samples=args.trials,
        scheduler="fifo",  # every trial the same full training, as the plain loop's
        max_concurrent_trials=1,
        cpus_per_trial=2,
        recipe=Recipe(epochs=args.epochs),
        teacher_recipe=Recipe(epochs=10),
        storage_path=str(folder / "ray"),
    )
    data = load_dataset(spec.dataset, seed=spec.seed)
    cache = StudyStorage.of(spec.storage_path, spec.name).teacher_cache
    teacher = get_teacher(
        data, spec.teacher, spec.teacher_recipe, seed=0, cache_dir=cache, log=lambda _: None
    )

    config = {"method": "kd", **PINNED, **dataclasses.asdict(spec.recipe), "seed": spec.seed}
    context = TrialContext(
        data=data, teacher=teacher, student_model=spec.student, device="cpu", threads=2
    )
    torch.set_num_threads(2)

    def plain_loop() -> float:
        start = time.perf_counter()
        for _ in range(args.trials):
            run_trial(config, context, lambda result, state: None)
        return time.perf_counter() - start

    plain_before = plain_loop()

    import ray

    from kdtune.study import run_study

    start = time.perf_counter()
    # a Ray of its own: a running or stale cluster on this machine must not be measured
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    study_started = time.time()  # wall clock, as Tune's timestamps
    start = time.perf_counter()
    result = run_study(spec, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", log=lambda _: None)
    study = time.perf_counter() - start
    ray.shutdown()
    # the baseline runs before and after the study, so a drift of the machine's speed during
    # the benchmark weighs on both sides alike
    plain_after = plain_loop()
    plain = (plain_before + plain_after) / 2
    rows = result.table.to_pylist()
    training = sum(r["time_total_s"] for r in rows)
    first_start = min(r["timestamp"] - r["time_total_s"] for r in rows)
    payload = {
        "trials": args.trials,
        "epochs": args.epochs,
        "plain_loop_s": plain,
        "plain_loop_before_after_s": [plain_before, plain_after],
        "study_s": study,
        "ray_start_s": ray_start,
        "trial_training_s": training,
        "ratio": study / plain,
        "ratio_with_ray_start": (study + ray_start) / plain,
        "outside_training_per_trial_s": (study - training) / args.trials,
        "first_trial_start_latency_s": first_start - study_started,
    }
    print(
        table(
            [
                ("", "seconds"),
                (f"plain loop, {args.trials} trainings (mean)", f"{plain:.1f}"),
                ("  before / after the study", f"{plain_before:.1f} / {plain_after:.1f}"),
                ("run_study (Ray already up)", f"{study:.1f}"),
                ("  of which inside the trainable", f"{training:.1f}"),
                ("ray.init", f"{ray_start:.1f}"),
            ]
        )
    )
    print(
        f"per trial outside training: {payload['outside_training_per_trial_s']:.2f} s; "
        f"first trial started {payload['first_trial_start_latency_s']:.1f} s after run_study"
    )
    print(
        f"run_study / plain loop = {payload['ratio']:.2f}x "
        f"({payload['ratio_with_ray_start']:.2f}x with Ray's start)"
    )
    print(f"wrote {write_result('overhead', torch.device('cpu'), payload, quick=args.quick)}")
    return payload


if __name__ == "__main__":
    main()
