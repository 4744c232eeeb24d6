"""How much of its search quality each Optuna sampler keeps when many trials run at once.

The default study (MO-ASHA, its reference point) with 200 trials, replayed on the
learning-curve blackbox in simulated time (`bench.simulated_search`) at 1, 8 and 64 concurrent
trials, with TPE without and with `constant_liar` (running trials given the worst value, so
that 64 asks made before any result do not all land on the same point), GP and NSGA-II. y is
the true hypervolume of the front the search reports after all 200 trials (its configurations
valued at their seed means). Headline: the study's default sampler's true hypervolume at 64
concurrent over its own at 1 (mean over seeds; goal: >= 0.95x).

    python -m bench.concurrency              # 10 seeds x 4 samplers x 3 concurrencies
    python -m bench.concurrency --quick      # 2 seeds, 40 trials (CI)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import figure_path, table, write_result
from bench.simulated_search import simulate_search
from kdtune.blackbox import DEFAULT_PATH, Blackbox
from kdtune.config import StudySpec
from kdtune.search import TPE_CONSTANT_LIAR, make_sampler, quiet_optuna


def tpe(constant_liar: bool) -> Callable[[StudySpec], Any]:
    return lambda spec: make_sampler(spec, constant_liar=constant_liar)


# name -> (the spec's sampler field, a replacement sampler or None for the study's own)
SAMPLERS: dict[str, tuple[str, Callable[[StudySpec], Any] | None]] = {
    "tpe": ("tpe", tpe(False)), "tpe_constant_liar": ("tpe", tpe(True)),
    "gp": ("gp", None), "nsga2": ("nsga2", None)}  # fmt: skip


def default_sampler(spec: StudySpec) -> str:
    """Which of SAMPLERS the study's own `make_sampler` builds."""
    if spec.sampler == "tpe" and TPE_CONSTANT_LIAR:
        return "tpe_constant_liar"
    return spec.sampler


def plot(found: dict[str, dict[int, list[float]]], default: str, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2))
    for name, by_level in found.items():
        levels = sorted(by_level)
        means = [np.mean(by_level[c]) for c in levels]
        errors = [np.std(by_level[c], ddof=1) / np.sqrt(len(by_level[c]))
                  if len(by_level[c]) > 1 else 0.0 for c in levels]  # fmt: skip
        axis.errorbar(levels, means, yerr=errors, marker="o", capsize=3,
                      lw=2.4 if name == default else 1.2,
                      label=f"{name}{' (the default)' if name == default else ''}")  # fmt: skip
    axis.set_xscale("log", base=2)
    axis.set_xticks(sorted(next(iter(found.values()))),
                    [str(c) for c in sorted(next(iter(found.values())))])  # fmt: skip
    axis.set_xlabel("trials running at once")
    axis.set_ylabel("true hypervolume after all trials (mean, s.e.)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, 40 trials (CI)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--blackbox", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    import studies.temperature_sweep as study

    if args.quick:
        args.seeds, args.trials = 2, 40
    quiet_optuna(False)
    box = Blackbox.load(args.blackbox)
    levels = (1, 8, 64)
    base = dataclasses.replace(study.SPEC, num_samples=args.trials, front_seeds=1)
    default = default_sampler(base)
    began = time.perf_counter()
    found: dict[str, dict[int, list[float]]] = {}
    for name, (field, sampler) in SAMPLERS.items():
        found[name] = {c: [] for c in levels}
        for seed in range(args.seeds):
            spec = dataclasses.replace(base, sampler=field, seed=seed)
            for c in levels:
                found[name][c].append(simulate_search(spec, box, c, sampler=sampler).final[1])
        print(f"{name}: " + ", ".join(f"{c} at once {np.mean(v):.5f}"
                                      for c, v in found[name].items()), flush=True)  # fmt: skip
    wall = time.perf_counter() - began
    keeps = {name: {str(c): float(np.mean(v) / np.mean(by_level[1])) for c, v in by_level.items()}
             for name, by_level in found.items()}  # fmt: skip
    rows = [("sampler", *[f"true HV, {c} at once" for c in levels], "kept at 8", "kept at 64")]
    rows += [(name + (" (default)" if name == default else ""),
              *[f"{np.mean(by_level[c]):.5f} +- {np.std(by_level[c]):.5f}" for c in levels],
              f"{keeps[name]['8']:.3f}", f"{keeps[name]['64']:.3f}")
             for name, by_level in found.items()]  # fmt: skip
    print(table(rows))
    ratio = keeps[default]["64"]
    print(f"{args.seeds} seeds x {args.trials} trials in {wall:.0f} s on {args.blackbox.name}")
    print(f"default sampler ({default}): true hypervolume at 64 concurrent / at 1 = {ratio:.2f}x")
    figure = plot(found, default, figure_path("concurrency", torch.device("cpu"), args.quick),
                  f"{study.SPEC.name} (MO-ASHA), {args.trials} trials on the {args.blackbox.name} "
                  f"blackbox, {args.seeds} seeds:\nthe default ({default}) keeps {ratio:.2f}x of "
                  "its 1-at-once true hypervolume at 64")  # fmt: skip
    record = write_result("concurrency", torch.device("cpu"), {
        "blackbox": args.blackbox.name, "seeds": args.seeds, "trials": args.trials,
        "default": default, "keep": keeps[default], "ratio": ratio, "kept": keeps,
        "true_hypervolume": {name: {str(c): v for c, v in by_level.items()}
                             for name, by_level in found.items()},
        "wall_s": wall, "figure": figure.name}, quick=args.quick)  # fmt: skip
    print(f"wrote {record} and {figure}")
    return {"keep": keeps[default], "kept": keeps}


if __name__ == "__main__":
    main()
