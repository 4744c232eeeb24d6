"""Which Optuna sampler should a kdtune search use? TPE, GPSampler and NSGA-II on the default
study (studies/temperature_sweep.py), each trial at its full budget (FIFO, so that a trial count
means the same for every sampler and the scheduler plays no part), same seeds.

For each sampler and seed: the hypervolume of the Pareto front of the first n trials to finish,
with the reference point of the study's spec, at n = a third, two thirds and all of the trials.
The headline is the best sampler's mean final hypervolume over the runner-up's.

    python -m bench.samplers            # 3 seeds x 24 trials
    python -m bench.samplers --quick    # 1 seed x 6 trials of 6 epochs (CI)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common import table, write_result
from bench.search_efficiency import quick_spec, run_search

SAMPLERS = ("tpe", "gp", "nsga2")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 trials of 6 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args(argv)
    import ray

    import studies.temperature_sweep as study
    from kdtune.cluster import set_verbosity

    spec = study.SPEC
    if args.quick:
        args.seeds, args.trials, spec = 1, 6, quick_spec(spec)
    set_verbosity(False)
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="kdtune_samplers_"))
    counts = sorted({max(1, args.trials // 3), max(1, 2 * args.trials // 3), args.trials})
    found: dict[str, list[list[float]]] = {name: [] for name in SAMPLERS}
    for seed in range(args.seeds):
        for sampler in SAMPLERS:
            run = dataclasses.replace(spec, name=f"{sampler}_{seed}", seed=seed, sampler=sampler,
                                      scheduler="fifo", num_samples=args.trials,
                                      front_seeds=1)  # fmt: skip
            curve, _ = run_search(run, root / run.name)
            found[sampler].append([float(curve.hypervolume[n - 1]) for n in counts])
            print(f"seed {seed} {sampler}: hypervolume after {counts} trials = "
                  f"{[round(v, 5) for v in found[sampler][-1]]}", flush=True)  # fmt: skip
    ray.shutdown()
    means = {name: np.mean(values, axis=0) for name, values in found.items()}
    spread = {name: np.std(values, axis=0) for name, values in found.items()}
    rows = [("sampler", *(f"HV after {n} trials" for n in counts))]
    rows += [(name, *(f"{m:.5f} +- {s:.5f}" for m, s in zip(means[name], spread[name])))
             for name in SAMPLERS]  # fmt: skip
    print(table(rows))
    best, runner_up = sorted(SAMPLERS, key=lambda name: -means[name][-1])[:2]
    ratio = float(means[best][-1] / max(means[runner_up][-1], 1e-12))
    print(f"reference point {list(spec.reference_point) or 'natural'}; mean over {args.seeds} "
          f"seeds +- their standard deviation")  # fmt: skip
    print(f"final hypervolume of the best sampler ({best}) / the runner-up's ({runner_up}) = "
          f"{ratio:.2f}x")  # fmt: skip
    path = write_result("samplers", torch.device("cpu"), {
        "seeds": args.seeds, "trials": args.trials, "counts": counts, "best": best,
        "runner_up": runner_up, "ratio": ratio, "reference_point": list(spec.reference_point),
        "hypervolume": found}, quick=args.quick)  # fmt: skip
    print(f"wrote {path}")
    return {"best": best, "ratio": ratio, "hypervolume": found}


if __name__ == "__main__":
    main()
