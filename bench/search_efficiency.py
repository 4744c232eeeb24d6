"""What MO-ASHA saves: the default study's search with early stopping against the same search
with every trial at its full budget (FIFO), same seeds.

Each search is a real study (Ray Tune trials, the Optuna sampler, the MLflow record). From its
MLflow record: when each trial-epoch was logged and when each trial ended, so that after every
trial that ran its whole budget, x = the trial-epochs spent so far (every trial's, the stopped
and the running ones too) and the wall-clock since the first trial began, y = the hypervolume of
the full-budget front so far, with the reference point of the study's spec. MO-ASHA gets three
times FIFO's trials (the default study's 72 against 24), as it spends less on each.

Headline: the fraction of FIFO's trial-epochs MO-ASHA needs for its mean curve (over seeds) to
reach FIFO's mean final hypervolume, e.g. `0.42x` (goal: <= 0.5x; above 1x: never within
FIFO's budget). The figure shows both curves against trial-epochs and wall-clock.

Why it is what it is: FIFO's trials ran every epoch, so their learning curves say how well each
rung's ranking foresaw the final one (Spearman, unbiased: no trial was selected), and MO-ASHA's
decisions can be replayed over them, one trial after another in FIFO's order, with the
scheduler's own code. Ranked on the values at the rungs, the replay is MO-ASHA on FIFO's trials;
ranked on the final values at every rung, it is the same scheduler with a perfect ranker: what
its schedule alone loses and costs on these trials. The gap between the two is the task's (how
early its learning curves separate), the rest the schedule's.

How much a rung can be asked to foresee: FIFO's configurations are trained once more with
another training seed (the data split and teacher held), and the two final rankings compared
(Spearman), with how far a training seed moves a final value (std) against the spread across
the configurations. A rung that ranks the trials about as well as a second full training does
has little left to gain: what stays of the headline is then the task's noise, not the schedule.

    python -m bench.search_efficiency            # 3 seeds (--seeds 5 for the README's figures)
    python -m bench.search_efficiency --quick    # 1 seed, 6-epoch trials (CI)
    python -m bench.search_efficiency --grace-period 10 --reduction-factor 2   # another schedule
    python -m bench.search_efficiency --spec cifar100.toml --seeds 3   # your own study's spec
    python -m bench.search_efficiency --no-retest   # without the second training of FIFO's trials
    python -m bench.search_efficiency --blackbox --seeds 20   # on the learning-curve blackbox,
                                    # against true hypervolumes, with random search too (seconds
                                    # a seed: bench/blackbox_efficiency.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from bench.common import RESULTS, finite_or_none, table, write_result
from kdtune.config import StudySpec
from kdtune.pareto import hypervolume_2d

if TYPE_CHECKING:
    from kdtune.runner import StudyResult  # imports Ray

RETEST_SEED = 1000  # + the search's seed: the second training's, one no search uses


@dataclasses.dataclass(frozen=True)
class Curve:
    """A search's progress, one point per trial that ran its whole budget, in end order."""

    epochs: np.ndarray  # trial-epochs spent when it ended
    seconds: np.ndarray  # since the search's first trial began
    hypervolume: np.ndarray  # of the full-budget front so far
    total_epochs: int  # the whole search's
    total_seconds: float
    # epochs x objectives of each trial that ran its whole budget, in start order
    learning: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def final(self) -> float:
        return float(self.hypervolume[-1]) if len(self.hypervolume) else 0.0


def search_curve(spec: StudySpec, result: StudyResult) -> Curve:
    """The curve of a finished study, read from its MLflow record."""
    from mlflow import MlflowClient

    from kdtune.outcome import reference_point

    client = MlflowClient(result.tracking_uri)
    rows = result.table.to_pylist()
    runs = {r["mlflow_run_id"]: client.get_run(r["mlflow_run_id"]).info for r in rows}
    began = min(info.start_time for info in runs.values())
    epoch_times = np.sort(np.concatenate([
        [m.timestamp for m in client.get_metric_history(run_id, spec.objectives[0][0])]
        for run_id in runs]))  # fmt: skip
    full = sorted((r for r in rows if r["status"] == "TERMINATED"),
                  key=lambda r: runs[r["mlflow_run_id"]].end_time)  # fmt: skip
    names, modes = [m for m, _ in spec.objectives], [d for _, d in spec.objectives]
    points = np.array([[r[n] for n in names] for r in full], dtype=float).reshape(-1, len(names))
    reference = reference_point(spec, points)
    ends = np.array([runs[r["mlflow_run_id"]].end_time for r in full], dtype=float)
    learning = [np.array([[m.value for m in sorted(client.get_metric_history(r["mlflow_run_id"], n),
                                                    key=lambda m: m.step)] for n in names]).T
                for r in sorted(full, key=lambda r: runs[r["mlflow_run_id"]].start_time)]
    return Curve(
        epochs=np.searchsorted(epoch_times, ends, side="right"),
        seconds=(ends - began) / 1000,
        hypervolume=np.array([hypervolume_2d(points[: i + 1], modes, reference)
                              for i in range(len(full))]),  # fmt: skip
        total_epochs=len(epoch_times),
        total_seconds=(max(info.end_time for info in runs.values()) - began) / 1000,
        learning=learning,
    )


def replay(learning: Sequence[np.ndarray], spec: StudySpec, perfect: bool = False) -> Curve:
    """MO-ASHA's decisions (kdtune's scheduler itself) over trials whose every epoch is known,
    one trial after another: ranked on each rung's values, or with `perfect`, on the final
    ones at every rung. Hypervolumes are of the full-budget front, as in `search_curve`."""
    from kdtune.outcome import reference_point
    from kdtune.scheduler import MultiObjectiveAsha
    from kdtune.search import grace_period

    names, modes = [m for m, _ in spec.objectives], [d for _, d in spec.objectives]
    scheduler = MultiObjectiveAsha(f"replay of {spec.name}", spec.objectives, spec.recipe.epochs,
                                   grace_period(spec), spec.reduction_factor)  # fmt: skip
    reference = reference_point(spec, np.array([t[-1] for t in learning]))
    spent, full, epochs = 0, [], []
    for number, trial in enumerate(learning):
        for epoch, values in enumerate(np.broadcast_to(trial[-1], trial.shape) if perfect
                                       else trial, 1):  # fmt: skip
            spent += 1
            report = {"epoch": epoch, **dict(zip(names, values.tolist()))}
            if scheduler.judge(str(number), [report]) == "STOP":
                break
        else:
            full.append(trial[-1])
            epochs.append(spent)
    return Curve(epochs=np.array(epochs), seconds=np.full(len(epochs), np.nan),
                 hypervolume=np.array([hypervolume_2d(np.array(full[: i + 1]), modes, reference)
                                       for i in range(len(full))]),
                 total_epochs=spent, total_seconds=float("nan"))  # fmt: skip


def rung_spearman(learning: Sequence[np.ndarray], rungs: Sequence[int]) -> np.ndarray:
    """rungs x objectives: the Spearman correlation of each rung epoch's values with the final
    ones, over trials that all ran in full (none selected, so none of the range restriction the
    study's own figure has)."""
    from scipy.stats import spearmanr

    trials = np.array(learning)  # trials x epochs x objectives
    return np.array([[spearmanr(trials[:, rung - 1, j], trials[:, -1, j]).statistic
                      for j in range(trials.shape[2])] for rung in rungs])  # fmt: skip


def read_spec(path: Path) -> StudySpec:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    with open(path, "rb") as handle:
        return StudySpec.from_dict(tomllib.load(handle))


def quick_spec(spec: StudySpec) -> StudySpec:
    """Six-epoch trainings for CI; they do not reach the study's reference: the natural one."""
    return dataclasses.replace(
        spec, recipe=dataclasses.replace(spec.recipe, epochs=6),
        teacher_recipe=dataclasses.replace(spec.teacher_recipe, epochs=6), reference_point=())


def study_in(spec: StudySpec, folder: Path) -> StudyResult:
    """A real, quiet study with its Ray storage and MLflow store in `folder`."""
    from kdtune.study import run_study

    spec = dataclasses.replace(spec, storage_path=str(folder / "ray"))
    return run_study(spec, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", log=lambda _: None)


def run_search(spec: StudySpec, folder: Path) -> tuple[Curve, StudyResult]:
    """A search in `folder`: its curve and result."""
    result = study_in(spec, folder)
    return search_curve(spec, result), result


def retrain(spec: StudySpec, result: StudyResult, folder: Path,
            seed: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Every full-budget configuration of a search trained again with training seed `seed` (the
    study's seed-check machinery: a grid study over them): configurations x objectives, the
    search's final values and the second training's, in the same order."""
    from kdtune.reseed import config_key, reseed_spec
    from kdtune.search import grid_keys
    from kdtune.study import study_declarations

    rows = [r for r in result.table.to_pylist() if r["status"] == "TERMINATED"]
    spec = dataclasses.replace(spec, reseed=(seed,))
    again = reseed_spec(spec, rows, study_declarations(spec))
    second = study_in(again, folder)
    keys, names = grid_keys(again), [m for m, _ in spec.objectives]
    retrained = {config_key(r, keys): r for r in second.table.to_pylist()
                 if r["status"] == "TERMINATED"}  # fmt: skip
    pairs = [(row, retrained[config_key(row, keys)]) for row in rows
             if config_key(row, keys) in retrained]  # fmt: skip
    return (np.array([[a[n] for n in names] for a, _ in pairs], dtype=float),
            np.array([[b[n] for n in names] for _, b in pairs], dtype=float))  # fmt: skip


def retest_agreement(first: np.ndarray, second: np.ndarray) -> dict[str, np.ndarray]:
    """Per objective, of two trainings of the same configurations (configurations x objectives
    each): the Spearman correlation of their rankings, the standard deviation a training seed
    adds to one configuration's value (pooled: the mean squared difference over 2), and the
    standard deviation across the configurations of the first training's values."""
    from scipy.stats import spearmanr

    return {"spearman": np.array([spearmanr(first[:, j], second[:, j]).statistic
                                  for j in range(first.shape[1])]),  # fmt: skip
            "seed_std": np.sqrt(np.mean((first - second) ** 2, axis=0) / 2),
            "spread": first.std(axis=0, ddof=1)}


def at(curve: Curve, x: np.ndarray, axis: str = "epochs") -> np.ndarray:
    """The curve's hypervolume at each x (a step function: 0 before its first full trial)."""
    where = np.searchsorted(getattr(curve, axis), x, side="right") - 1
    return np.where(where >= 0, curve.hypervolume[np.maximum(where, 0)], 0.0)


def fraction_to_reach(curves: Sequence[Curve], target: float, budget: float) -> float:
    """The least x (as a fraction of `budget` trial-epochs) where the mean of `curves` reaches
    `target`; inf where it never does."""
    xs = np.unique(np.concatenate([c.epochs for c in curves]))
    mean = np.mean([at(c, xs) for c in curves], axis=0)
    reached = xs[mean >= target - 1e-12]
    return float(reached[0] / budget) if len(reached) else float("inf")


def plot(fifo: Sequence[Curve], moasha: Sequence[Curve], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for axis, unit, label in ((axes[0], "epochs", "trial-epochs spent"),
                              (axes[1], "seconds", "wall-clock since the first trial (s)")):
        for curves, name, colour in ((fifo, "FIFO (every trial its full budget)", "tab:gray"),
                                     (moasha, "MO-ASHA", "tab:blue")):  # fmt: skip
            end = max(getattr(c, unit)[-1] if len(c.epochs) else 0 for c in curves)
            xs = np.linspace(0, end, 400)
            for curve in curves:
                axis.step(xs, at(curve, xs, unit), where="post", color=colour, alpha=0.25, lw=1)
            axis.step(xs, np.mean([at(c, xs, unit) for c in curves], axis=0), where="post",
                      color=colour, lw=2.2, label=f"{name}, mean of {len(curves)} seeds")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("hypervolume of the full-budget front")
    axes[0].legend(loc="lower right", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def replays(fifo: Sequence[Curve], spec: StudySpec) -> dict:
    """Why the headline is what it is (module docstring): the rungs' Spearman over FIFO's trials,
    and MO-ASHA replayed over each seed's, on the rungs' values and with a perfect ranker, at
    the study's rungs and with the first rung moved to the second's; printed and returned. A
    replay keeps a subset of FIFO's trials, so it reaches FIFO's final hypervolume only on the
    seeds where it keeps every trial of FIFO's front: counted, with the median cost there."""
    from kdtune.search import rungs

    learning = [c.learning for c in fifo]
    spearman = np.mean([rung_spearman(trials, rungs(spec)) for trials in learning], axis=0)
    names = [m for m, _ in spec.objectives]
    print(f"Spearman correlation of each rung's ranking with the final one over FIFO's trials "
          f"(mean of {len(fifo)} seeds): " + "; ".join(
              f"epoch {rung}: " + ", ".join(f"{n} {v:+.2f}" for n, v in zip(names, row))
              for rung, row in zip(rungs(spec), spearman)))  # fmt: skip
    schedules = [spec] + [dataclasses.replace(spec, grace_period=rungs(spec)[1])
                          for _ in rungs(spec)[1:2]]  # fmt: skip
    rows = [("rungs", "ranked on", "keeps FIFO's front", "trial-epochs to FIFO's final HV",
             "share of FIFO's final HV kept", "trial-epochs spent")]  # fmt: skip
    found = []
    for schedule in schedules:
        for perfect in (False, True):
            replayed = [replay(t, schedule, perfect) for t in learning]
            shares = [fraction_to_reach([r], f.final, f.total_epochs)
                      for r, f in zip(replayed, fifo)]  # fmt: skip
            reached = [x for x in shares if np.isfinite(x)]
            kept = float(np.mean([r.final / f.final for r, f in zip(replayed, fifo)]))
            spent = float(np.mean([r.total_epochs / f.total_epochs
                                   for r, f in zip(replayed, fifo)]))  # fmt: skip
            rows.append((str(rungs(schedule)),
                         "final values (a perfect ranker)" if perfect else "the rungs' values",
                         f"{len(reached)} of {len(fifo)} seeds",
                         f"{np.median(reached):.2f}x (median)" if reached else "-",
                         f"{kept:.3f}", f"{spent:.2f}x"))  # fmt: skip
            found.append({"rungs": rungs(schedule), "perfect": perfect,
                          "per_seed": [finite_or_none(x) for x in shares], "share_kept": kept,
                          "spent": spent})  # fmt: skip
    print("MO-ASHA replayed over each seed's FIFO trials, one at a time, in FIFO's order:")
    print(table(rows))
    return {"rung_spearman": {str(rung): dict(zip(names, row.tolist()))
                              for rung, row in zip(rungs(spec), spearman)},
            "replay": found}  # fmt: skip


def retests(trained_twice: Sequence[tuple[np.ndarray, np.ndarray]], spec: StudySpec) -> dict:
    """`retest_agreement` of each seed's FIFO trials, the mean over seeds printed and returned."""
    found = [retest_agreement(first, second) for first, second in trained_twice]
    mean = {key: np.mean([f[key] for f in found], axis=0) for key in found[0]}
    names = [m for m, _ in spec.objectives]

    def each(key: str, form: str) -> str:
        return ", ".join(f"{n} {format(v, form)}" for n, v in zip(names, mean[key]))

    pairs = ", ".join(str(len(first)) for first, _ in trained_twice)
    print(f"FIFO's configurations trained again with another training seed ({pairs} "
          f"configurations, mean of {len(found)} seeds): the two final rankings agree at Spearman "
          f"{each('spearman', '+.2f')} (how much of a final ranking a rung can be asked to "
          f"foresee); a training seed moves a final value by {each('seed_std', '.4f')} (std), "
          f"against {each('spread', '.4f')} across the configurations")  # fmt: skip
    return {key: dict(zip(names, value.tolist())) for key, value in mean.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 and 12 trials of 6 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=24, help="FIFO's")
    parser.add_argument("--moasha-trials", type=int, default=72, help="the default study's")
    parser.add_argument("--spec", type=Path, default=None,
                        help="a TOML file of StudySpec fields (as `kdtune run`'s) to measure "
                             "instead of the default study, e.g. CIFAR-100 on a GPU machine")
    parser.add_argument("--grace-period", type=int, default=None,
                        help="MO-ASHA's first rung (default: the study's, epochs / factor^2)")
    parser.add_argument("--reduction-factor", type=float, default=None,
                        help="MO-ASHA's (default: the study's, 3)")
    parser.add_argument("--no-retest", dest="retest", action="store_false",
                        help="skip training FIFO's configurations a second time, with another "
                             "seed (it costs one more FIFO search per seed)")
    parser.add_argument("--blackbox", nargs="?", const=True, default=None, metavar="FILE",
                        help="measure on the learning-curve blackbox (default: the shipped "
                             "digits one) over --seeds seeds, against each search's true "
                             "hypervolume (bench/blackbox_efficiency.py), instead of real runs")
    args = parser.parse_args(argv)
    import ray

    import studies.temperature_sweep as study
    from kdtune.cluster import set_verbosity

    # plain searches, one seed per configuration (bench.front_seeds measures the replicates)
    spec = dataclasses.replace(read_spec(args.spec) if args.spec else study.SPEC, front_seeds=1,
                               **{key: value for key, value in (
                                   ("grace_period", args.grace_period),
                                   ("reduction_factor", args.reduction_factor))
                                  if value is not None})  # fmt: skip
    if args.blackbox:
        from bench import blackbox_efficiency

        return blackbox_efficiency.main(args, spec)
    if args.quick:
        args.seeds, args.trials, args.moasha_trials, spec = 1, 6, 12, quick_spec(spec)
    set_verbosity(False)
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="kdtune_search_efficiency_"))
    fifo, moasha, trained_twice = [], [], []
    for seed in range(args.seeds):
        for arm, scheduler, trials in ((fifo, "fifo", args.trials),
                                       (moasha, "moasha", args.moasha_trials)):  # fmt: skip
            arm_spec = dataclasses.replace(spec, name=f"{scheduler}_{seed}", seed=seed,
                                           scheduler=scheduler, num_samples=trials)  # fmt: skip
            curve, result = run_search(arm_spec, root / arm_spec.name)
            arm.append(curve)
            if scheduler == "fifo" and args.retest:
                trained_twice.append(retrain(arm_spec, result, root / arm_spec.name,
                                             seed=RETEST_SEED + seed))  # fmt: skip
            print(f"seed {seed} {scheduler}: {trials} trials, {len(curve.epochs)} ran their "
                  f"budget, {curve.total_epochs} trial-epochs, {curve.total_seconds:.0f} s, "
                  f"final hypervolume {curve.final:.5f}", flush=True)  # fmt: skip
    ray.shutdown()
    budget = float(np.mean([c.total_epochs for c in fifo]))
    target = float(np.mean([c.final for c in fifo]))
    fraction = fraction_to_reach(moasha, target, budget)
    seconds_budget = float(np.mean([c.total_seconds for c in fifo]))
    moasha_spent = float(np.mean([c.total_epochs for c in moasha])) / budget
    per_seed = [fraction_to_reach([m], f.final, f.total_epochs)
                for f, m in zip(fifo, moasha)]  # fmt: skip
    rows = [("seed", "FIFO final HV", "MO-ASHA final HV", "MO-ASHA epochs to FIFO's HV")]
    rows += [(str(s), f"{f.final:.5f}", f"{m.final:.5f}",
              f"{p:.2f}x" if np.isfinite(p) else "not reached")
             for s, (f, m, p) in enumerate(zip(fifo, moasha, per_seed))]  # fmt: skip
    print(table(rows))
    print(f"reference point {list(spec.reference_point) or 'natural'}; FIFO: {args.trials} "
          f"trials, {budget:.0f} trial-epochs, {seconds_budget:.0f} s; MO-ASHA: "
          f"{args.moasha_trials} trials, {moasha_spent:.2f}x FIFO's trial-epochs")  # fmt: skip
    # the last few percent of a saturating front are a few trials' luck; how fast each gets
    # most of the way is the steadier comparison
    partial = {share: (fraction_to_reach(moasha, share * target, budget),
                       fraction_to_reach(fifo, share * target, budget))
               for share in (0.9, 0.95)}  # fmt: skip
    for share, (mine, theirs) in partial.items():
        print(f"to {share:.0%} of FIFO's final hypervolume: MO-ASHA {mine:.2f}x, FIFO itself "
              f"{theirs:.2f}x of FIFO's trial-epochs")  # fmt: skip
    replayed = replays(fifo, spec)
    if trained_twice:
        replayed["retest"] = retests(trained_twice, spec)
    reached = bool(np.isfinite(fraction))
    # never reached: all that is known is that MO-ASHA would need more than its whole search
    shown = f"{fraction:.2f}x" if reached else f"> {moasha_spent:.2f}x (not reached)"
    if reached:
        print(f"MO-ASHA trial-epochs to FIFO's final hypervolume / FIFO's = {shown}")
    else:
        print(f"MO-ASHA did not reach FIFO's final hypervolume in its whole search "
              f"(= {moasha_spent:.2f}x of FIFO's trial-epochs)")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    figure = plot(fifo, moasha, RESULTS / f"search_efficiency{'-quick' if args.quick else ''}.png",
                  f"{spec.name} on {spec.dataset}, {args.seeds} seeds: MO-ASHA reaches FIFO's "
                  f"final hypervolume with {shown} of its trial-epochs")  # fmt: skip
    curves = {name: [{k: np.asarray(v).tolist() for k, v in dataclasses.asdict(c).items()
                      if k != "learning"} for c in arm]
              for name, arm in (("fifo", fifo), ("moasha", moasha))}  # fmt: skip
    path = write_result("search_efficiency", torch.device("cpu"), {
        "seeds": args.seeds, "fifo_trials": args.trials, "moasha_trials": args.moasha_trials,
        "epochs": spec.recipe.epochs, "reference_point": list(spec.reference_point),
        "ratio": fraction if reached else moasha_spent, "reached": reached,
        "per_seed": [finite_or_none(p) for p in per_seed],
        "fifo_seconds": seconds_budget,
        "to_share": {f"{s:.2f}": {"moasha": finite_or_none(m), "fifo": finite_or_none(f)}
                     for s, (m, f) in partial.items()},
        **replayed, "figure": figure.name, "curves": curves}, quick=args.quick)  # fmt: skip
    print(f"wrote {path} and {figure}")
    return {"ratio": fraction, "per_seed": per_seed}


if __name__ == "__main__":
    main()
