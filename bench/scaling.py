"""Study scaling: trials per hour of the default study (temperature_sweep, digits) with 1 and 2
concurrent trials on this machine's CPUs, the same trials (same seed, same Optuna sampler) in
both runs. With 2 concurrent trials each gets 1 CPU thread instead of 2."""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

import studies.temperature_sweep as study
from bench.common import table, write_result
from kdtune.data import load_dataset
from kdtune.storage import StudyStorage
from kdtune.teacher import get_teacher


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 trials of 10 epochs (CI)")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=study.SPEC.recipe.epochs)
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs = 4, 10
    import ray

    from kdtune.study import run_study

    # a Ray of its own: a running or stale cluster on this machine must not be measured
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    folder = Path(tempfile.mkdtemp(prefix="kdtune_scaling_"))
    # the teacher is trained once, before the clock starts, and found in the cache by both runs
    spec = dataclasses.replace(study.SPEC, storage_path=str(folder / "ray"), front_seeds=1)
    get_teacher(
        load_dataset(spec.dataset, seed=spec.seed),
        spec.teacher,
        spec.teacher_recipe,
        seed=spec.seed,
        cache_dir=StudyStorage.of(spec.storage_path, "").teacher_cache,
        log=lambda _: None,
    )
    rates = {}
    for concurrent in (1, 2):
        spec = dataclasses.replace(
            study.SPEC,
            name=f"scaling{concurrent}",
            scheduler="fifo",  # whole trials: the rate of trials is what scales
            num_samples=args.trials,
            max_concurrent_trials=concurrent,
            cpus_per_trial=2 / concurrent,
            recipe=dataclasses.replace(study.SPEC.recipe, epochs=args.epochs),
            storage_path=str(folder / "ray"),
        )
        start = time.perf_counter()
        run_study(spec, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", log=lambda _: None)
        rates[concurrent] = args.trials / (time.perf_counter() - start) * 3600
    ray.shutdown()
    ratio = rates[2] / rates[1]
    print(
        table(
            [
                ("concurrent trials", "trials/hour"),
                *((str(c), f"{r:.0f}") for c, r in rates.items()),
            ]
        )
    )
    print(f"{args.trials} trials of {args.epochs} epochs: 2 concurrent / 1 = {ratio:.2f}x")
    payload = {
        "trials": args.trials,
        "epochs": args.epochs,
        "trials_per_hour": {str(c): r for c, r in rates.items()},
        "ratio": ratio,
    }
    print(f"wrote {write_result('scaling', torch.device('cpu'), payload, quick=args.quick)}")
    return payload


if __name__ == "__main__":
    main()
