"""Self-distillation in a noisy Gaussian mixture (Takanami et al. 2025), checked against theory.

Binary mixture x | y ~ N(+-1_N / sqrt(N), Delta I), training labels flipped with probability theta,
ridge-regularised logistic students. For each alpha = M/N and seed (one Ray Tune trial each):
0-SD on the noisy labels, multi-stage SD with hard and with soft pseudo-labels (lambda and beta
picked per stage on a noisy validation split, stages stopped early when validation stops
improving), and a noiseless 0-SD whose error is compared with the closed form
eps(alpha) = H(1 / sqrt(Delta (1 + Delta / alpha))). Under class imbalance, SD with a learned
bias is compared with bias fixing. Errors are the exact expected test errors of the trained
students (replica formula from their overlap and norm), so no test-sampling noise is added.

Default: N = 400, alpha in {0.5, 1, 2, 3, 5}, 5 seeds, theta 0.3, CPU, about 2 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa

from kdtune import plots, tables
from kdtune.cli import float_list, guarded, int_list, question_of
from kdtune.selfdistill import GmmStudySpec, optimal_error_noiseless

SPEC = GmmStudySpec()
SMOKE = dataclasses.replace(SPEC, alphas=(1.0, 3.0), seeds=(0,), dim=100, stages=2,
                            imbalance=(0.2, 0.2, 2.0, 2))  # fmt: skip
VARIANTS = {  # label -> result column
    "0-SD": "sd0_exact_error",
    "1-SD hard": "hard_sd1_exact_error",
    "SD hard, early-stopped": "hard_es_exact_error",
    "1-SD soft": "soft_sd1_exact_error",
    "SD soft, early-stopped": "soft_es_exact_error",
    "0-SD noiseless": "noiseless_sd0_exact_error",
}

PROGRESS = ["sd0_exact_error", "hard_es_exact_error"]  # what each trial's progress line shows


def _long(rows: list[dict], columns: dict[str, str], key: str) -> list[dict]:
    """One row per (trial, variant): `key` and the variant's value as `error`."""
    return [{"variant": label, key: row[key], "error": row.get(column), "status": row["status"]}
            for row in rows for label, column in columns.items()]  # fmt: skip


def report(
    spec: GmmStudySpec, table: pa.Table, folder: Path
) -> tuple[list[Path], dict[str, float], list[dict]]:
    """Prints the tables; returns the figures, the figures of merit and the summary rows."""
    rows = table.to_pylist()
    balanced = [r for r in rows if r["setting"] == "balanced"]
    by_alpha = tables.seed_summary(balanced, ["alpha"],
                                    list(VARIANTS.values()) + ["hard_es_stages"])  # fmt: skip
    print(tables.format_summary(by_alpha, ["alpha"], list(VARIANTS.values()),
                                 title=f"\nTest error by alpha (rho 0.5, theta {spec.theta}, "
                                       f"mean ± std over {len(spec.seeds)} seeds):"))  # fmt: skip
    gaps = []
    print("\nNoiseless 0-SD vs the closed form H(1/sqrt(Delta (1 + Delta/alpha))):")
    for entry in by_alpha:
        theory = optimal_error_noiseless(entry["alpha"], spec.delta)
        gaps.append(entry["noiseless_sd0_exact_error_mean"] - theory)
        gain = entry["sd0_exact_error_mean"] - entry["hard_sd1_exact_error_mean"]
        print(f"  alpha {entry['alpha']:g}: measured {entry['noiseless_sd0_exact_error_mean']:.4f}"
              f"  theory {theory:.4f}  gap {gaps[-1]:+.4f};  hard 1-SD gain over 0-SD "
              f"{gain:+.4f}")  # fmt: skip
    imbalanced = [r for r in rows if r["setting"] != "balanced"]
    stages = range(int(spec.imbalance[3]) + 1)
    stage_rows = [{"setting": r["setting"], "stage": t, "status": r["status"],
                   "hard": r.get(f"hard_sd{t}_exact_error"),
                   "soft": r.get(f"soft_sd{t}_exact_error")}
                  for r in imbalanced for t in stages]  # fmt: skip
    by_stage = tables.seed_summary(stage_rows, ["setting", "stage"],
                                    ["hard", "soft"])  # fmt: skip
    rho, theta, alpha, _ = spec.imbalance
    print(tables.format_summary(by_stage, ["setting", "stage"], ["hard", "soft"],
                                 title=f"\nImbalanced classes (rho {rho}, theta {theta}, alpha "
                                       f"{alpha}): test error by stage"))  # fmt: skip
    alphas = np.geomspace(min(spec.alphas), max(spec.alphas), 100)
    figures = [
        plots.errorbar_panels(
            tables.seed_summary(_long(balanced, VARIANTS, "alpha"), ["variant", "alpha"],
                                 ["error"]),
            x="alpha", metrics=["error"], group="variant", log_x=True,
            path=folder / "sd_error_vs_alpha.png",
            title=f"SD in a noisy GMM (Delta {spec.delta}, theta {spec.theta}, N {spec.dim})",
            curves={"closed form, noiseless": (alphas, [optimal_error_noiseless(a, spec.delta)
                                                        for a in alphas])},
        ),
        plots.errorbar_panels(
            by_stage, x="stage", metrics=["hard", "soft"], group="setting",
            path=folder / "sd_bias_fixing.png",
            title=f"Imbalanced classes (rho {rho}): learned vs fixed bias",
        ),
    ]  # fmt: skip
    return figures, {"noiseless_max_abs_gap": float(np.max(np.abs(gaps)))}, by_alpha + by_stage


def main(argv: list[str] | None = None) -> pa.Table:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--smoke-test", action="store_true", help="2 small cells and 1 seed (CI)")
    add("--resume", action="store_true", help="continue an interrupted study of the same --name")
    add("--name", default=SPEC.name, help="MLflow experiment and results folder (%(default)s)")
    add("--alphas", type=float_list, help=f"samples per dimension M/N (default {SPEC.alphas})")
    add("--seeds", type=int_list, help=f"data draws per alpha (default {SPEC.seeds})")
    add("--dim", type=int, help=f"input dimension N (default {SPEC.dim})")
    add("--theta", type=float, help=f"label-flip probability (default {SPEC.theta})")
    add("--delta", type=float, help=f"cluster variance (default {SPEC.delta})")
    add("--stages", type=int, help=f"SD stages after 0-SD (default {SPEC.stages})")
    add("--max-concurrent-trials", type=int, help="trials at once (default 2)")
    add("--storage", help="Ray results folder or URI (default ./ray_results)")
    add("--tracking-uri", default=None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
        "or sqlite mlflow.db in the working folder)")  # fmt: skip
    add("--verbose", action="store_true",
        help="also show Ray's, Tune's, MLflow's and Optuna's own messages")
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke_test else SPEC
    flags = {"name": args.name, "alphas": args.alphas, "seeds": args.seeds, "dim": args.dim,
             "theta": args.theta, "delta": args.delta, "stages": args.stages,
             "max_concurrent_trials": args.max_concurrent_trials,
             "storage_path": args.storage}  # fmt: skip

    def run():  # -> (GmmStudySpec, kdtune.runner.StudyResult); Ray is imported inside
        spec = dataclasses.replace(base, **{k: v for k, v in flags.items() if v is not None})
        points = spec.points()  # validates every cell before Ray starts
        from kdtune.cluster import set_verbosity
        from kdtune.runner import run_trials
        from kdtune.trainable import selfdistill_trainable

        set_verbosity(args.verbose)
        return spec, run_trials(spec.name, selfdistill_trainable, points,
                                params=dataclasses.asdict(spec), storage_path=spec.storage_path,
                                tracking_uri=args.tracking_uri, resume=args.resume,
                                max_concurrent_trials=spec.max_concurrent_trials,
                                progress_metrics=PROGRESS, label_keys=("setting", "alpha", "seed"),
                                question=question_of(__doc__ or ""))  # fmt: skip

    spec, result = guarded(run)
    files, metrics, summary = report(spec, result.table, result.study_dir)
    result.publish(files, metrics, summary=summary)
    from kdtune.cli import closing_lines

    print(closing_lines(result))
    return result.table


if __name__ == "__main__":
    main()
