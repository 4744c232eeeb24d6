"""Builds the learning-curve blackbox: real KD trainings of the default study's space on digits.

The default study (studies/temperature_sweep.py: CNN teacher -> MLP student, 30 epochs, `kd`
and `mixup_kd`) trained at scrambled Sobol points of each method's searched hyperparameters
over their declared search ranges (log-scale ones sampled in log space), each point with several
trial seeds. The data split and the teacher are those of the study's seed 0, as in a real study;
only the trial's seed varies. The trials run kdtune's own trial code (`trainable.run_trial` ->
`engine.fit`) in this process, without Ray, one thread. Every epoch's validation and test
metrics go into one Parquet file (one row per method, config, seed, epoch), the recipe in its
schema metadata; `kdtune.blackbox` reads it. Resumable: the file is rewritten (atomically) after
every training, and a re-run skips what it holds, so a kill loses the training in flight.

At the end (or alone, with --fidelity) it measures the surrogate's fidelity: each
configuration's seed mean at the last epoch predicted from the other configurations (5-fold
cross-validation, so 20% held out at a time), Spearman correlation against the measured one.

    python -m bench.blackbox                  # 400 configs (200 per method) x 3 seeds, 30 epochs:
                                              # ~75 min on one thread of a quiet 2-core machine
    python -m bench.blackbox --quick          # 8 configs x 2 seeds x 3 epochs, into a temp folder
    python -m bench.blackbox --fidelity       # fidelity of the shipped file only, no training
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from scipy.stats import qmc, spearmanr

import studies.temperature_sweep as study
from bench.common import RESULTS, table, write_result
from kdtune import __version__
from kdtune.atomic import atomic_path
from kdtune.blackbox import (
    KEYS,
    METADATA_KEY,
    Axis,
    Surrogate,
    holdout_predictions,
    method_tables,
    read_recipe,
)
from kdtune.config import ConfigError, StudySpec
from kdtune.engine import NonFiniteLossError
from kdtune.search import fixed_values, resolve, search_range, trial_constants
from kdtune.storage import StudyStorage
from kdtune.study import study_data, study_declarations
from kdtune.teacher import Teacher, get_teacher
from kdtune.trainable import TrialContext, run_trial

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "blackbox" / "digits.parquet"
QUICK_OUT = Path(tempfile.gettempdir()) / "kdtune-blackbox-quick" / "digits.parquet"
OBJECTIVES = ("val_acc", "val_ece")
# the surrogates the fidelity report compares; the first is kdtune.blackbox's default
SURROGATES = (Surrogate(), Surrogate("idw", k=1), Surrogate("idw", k=4), Surrogate("idw", k=16),
              Surrogate("kernel", bandwidth=0.1), Surrogate("kernel", bandwidth=0.2))  # fmt: skip
# the recipe fields a resumed build must share with the file it extends
SAME_RECIPE = ("study", "epochs", "sobol_seed", "space", "constants", "teacher")


def study_space(spec: StudySpec) -> dict[str, list[dict[str, Any]]]:
    """Each method's searched hyperparameters, their ranges and scales, as the study's search
    (`search.DefineByRun`) sees them."""
    space = {}
    for method, hparams in study_declarations(spec).items():
        axes = []
        for hparam in hparams:
            bounds = search_range(spec, method, hparam)
            if bounds is None:
                continue
            if hparam.kind is not float:  # Sobol points are continuous
                raise ConfigError(f"{method}.{hparam.name}: the blackbox samples float "
                                  f"hyperparameters only, not {hparam.kind.__name__}")  # fmt: skip
            axes.append({"name": hparam.name, "low": float(bounds[0]), "high": float(bounds[1]),
                         "log": hparam.log})  # fmt: skip
        space[method] = axes
    return space


def held_constant(spec: StudySpec, space: Mapping[str, Sequence[Mapping[str, Any]]]
                  ) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each method's other hyperparameters, at the study's fixed values or their defaults."""
    constants = {}
    for method, hparams in study_declarations(spec).items():
        searched = {axis["name"] for axis in space[method]}
        fixed = fixed_values(spec, method, hparams)
        constants[method] = {h.name: fixed.get(h.name, h.default) for h in hparams
                             if h.name not in searched}  # fmt: skip
    return constants


def sobol_points(axes: Sequence[Mapping[str, Any]], count: int, seed: int, stream: int
                 ) -> list[dict[str, float]]:  # fmt: skip
    """The first `count` points of a scrambled Sobol sequence over `axes`: the same prefix
    whatever `count` is, so a larger build extends a smaller one."""
    sampler = qmc.Sobol(len(axes), scramble=True, seed=np.random.default_rng([seed, stream]))
    unit = sampler.random_base2(max(0, math.ceil(math.log2(max(count, 1)))))[:count]
    bounds = [Axis(a["name"], a["low"], a["high"], a["log"]) for a in axes]
    return [{axis.name: float(axis.from_unit(u[i])) for i, axis in enumerate(bounds)} for u in unit]


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                                  timeout=10).stdout.strip()  # fmt: skip
        except OSError:
            return ""

    # the code that trains, not the data file it writes
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "kdtune", "studies",
                "bench/*.py")  # fmt: skip
    return {"git_commit": git("rev-parse", "HEAD") or "unknown", "git_dirty": bool(dirty)}


def make_recipe(spec: StudySpec, args: argparse.Namespace, teacher: Teacher) -> dict[str, Any]:
    space = study_space(spec)
    fields = ("name", "dataset", "teacher", "student", "methods", "seed", "recipe",
              "teacher_recipe", "protocol", "fixed", "search")  # fmt: skip
    return {
        "format": 1,
        "study": {f: dataclasses.asdict(spec)[f] for f in fields},
        "epochs": spec.recipe.epochs,
        "seeds": list(range(args.seeds)),
        "configs_per_method": math.ceil(args.configs / len(spec.methods)),
        "sobol_seed": args.sobol_seed,
        "space": space,
        "constants": held_constant(spec, space),
        "teacher": {"file": Path(teacher.path).name, **teacher.metrics},
        "kdtune_version": __version__,
        **git_state(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def merged_recipe(recipe: dict[str, Any], path: Path) -> dict[str, Any]:
    """The recipe of a build that extends `path`: the same measurements, seeds and configs
    the union of both."""
    old = read_recipe(path)
    for name in SAME_RECIPE:
        if json.dumps(old.get(name), sort_keys=True) != json.dumps(recipe[name], sort_keys=True):
            raise ConfigError(f"{path}: built with another {name} ({old.get(name)!r}, now "
                              f"{recipe[name]!r}); give another --out")  # fmt: skip
    return {**recipe, "seeds": sorted(set(old["seeds"]) | set(recipe["seeds"])),
            "configs_per_method": max(old["configs_per_method"], recipe["configs_per_method"]),
            "build_seconds": old.get("build_seconds", 0.0)}  # fmt: skip


def runs_to_do(recipe: Mapping[str, Any], seeds: Sequence[int], per_method: int
               ) -> list[tuple[str, int, int, dict[str, float]]]:  # fmt: skip
    """(method, config, seed, values), configs outermost: a build stopped early holds every
    method and seed over its first configurations."""
    points = {method: sobol_points(axes, per_method, recipe["sobol_seed"], stream)
              for stream, (method, axes) in enumerate(recipe["space"].items())}  # fmt: skip
    return [(method, config, seed, points[method][config]) for config in range(per_method)
            for method in recipe["space"] for seed in seeds]  # fmt: skip


def schema(recipe: Mapping[str, Any], metrics: Sequence[str]) -> pa.Schema:
    # hyperparameters exactly as trained; metrics as float32, what torch computes most of them
    # in, which halves the file
    names = sorted({axis["name"] for axes in recipe["space"].values() for axis in axes})
    return pa.schema([("method", pa.string()), ("config", pa.int32()), ("seed", pa.int32()),
                      ("epoch", pa.int32()), *[(n, pa.float64()) for n in names],
                      *[(m, pa.float32()) for m in sorted(set(metrics))]])  # fmt: skip


def train(spec: StudySpec, context: TrialContext, method: str, seed: int,
          values: Mapping[str, float]) -> list[dict[str, Any]]:  # fmt: skip
    """One trial's reports, every epoch; a diverged training keeps the epochs it reported and
    the rest as empty rows (so it counts as done; the lookup leaves it out)."""
    config = resolve({**trial_constants(spec), **values, "method": method, "seed": seed},
                     study_declarations(spec))  # fmt: skip
    reports: list[dict[str, Any]] = []
    with contextlib.suppress(NonFiniteLossError):
        run_trial(config, context, lambda result, state: reports.append(result))
    done = {r["epoch"] for r in reports}
    reports += [{"epoch": e} for e in range(1, spec.recipe.epochs + 1) if e not in done]
    return [{k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for r in reports]  # fmt: skip


def write(path: Path, parts: Sequence[pa.Table], recipe: Mapping[str, Any]) -> None:
    """The whole file again, atomically, so that a kill never leaves half of it."""
    table = pa.concat_tables(parts, promote_options="default")
    table = table.sort_by([(k, "ascending") for k in KEYS])
    metadata = {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(recipe).encode()}
    with atomic_path(path) as temp:
        pq.write_table(table.replace_schema_metadata(metadata), temp, compression="zstd",
                       compression_level=9)  # fmt: skip


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def build(spec: StudySpec, args: argparse.Namespace, out: Path, cache: Path) -> dict[str, Any]:
    data = study_data(spec)
    teacher = get_teacher(data, spec.teacher, spec.teacher_recipe, seed=spec.seed,
                          cache_dir=cache, log=print)  # fmt: skip
    recipe = make_recipe(spec, args, teacher)
    parts: list[pa.Table] = []
    done: set[tuple[str, int, int]] = set()
    if out.exists():
        recipe = merged_recipe(recipe, out)
        existing = pq.read_table(out)
        parts.append(existing.replace_schema_metadata(None))
        done = set(zip(*(existing.column(k).to_pylist() for k in ("method", "config", "seed"))))
    # the union of what the file holds and what was asked, so that every config has every seed
    todo = [run for run in runs_to_do(recipe, recipe["seeds"], recipe["configs_per_method"])
            if run[:3] not in done]  # fmt: skip
    print(f"blackbox: {out}: {len(done)} trainings held, {len(todo)} to run "
          f"({spec.recipe.epochs} epochs each, 1 thread)", flush=True)  # fmt: skip
    context = TrialContext(data=data, teacher=teacher, student_model=spec.student, device="cpu",
                           threads=1, checkpoint_interval_s=math.inf, test_every_epoch=True)
    began = time.perf_counter()
    for i, (method, config, seed, values) in enumerate(todo, 1):
        start = time.perf_counter()
        rows = train(spec, context, method, seed, values)
        keys = {"method": method, "config": config, "seed": seed, **values}
        rows = [{**keys, **row} for row in rows]
        metrics = [k for row in rows for k in row if k not in keys and k != "epoch"]
        parts.append(pa.Table.from_pylist(rows, schema=schema(recipe, metrics)))
        seconds = time.perf_counter() - start
        recipe["build_seconds"] = recipe.get("build_seconds", 0.0) + seconds
        write(out, parts, recipe)
        rate = (time.perf_counter() - began) / i
        last = rows[-1]
        print(f"[{i:>{len(str(len(todo)))}}/{len(todo)}] {method:<8} config {config:>3} seed "
              f"{seed}  val_acc {last.get('val_acc', math.nan):.4f} val_ece "
              f"{last.get('val_ece', math.nan):.4f}  {seconds:.1f} s | {rate:.2f} s/run, "
              f"ETA {_minutes(rate * (len(todo) - i))}", flush=True)  # fmt: skip
    return recipe


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None  # undefined: too few or constant
    return float(spearmanr(a, b).statistic)


def fidelity(path: Path, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Per surrogate, objective and method (and pooled over methods): the Spearman correlation
    between held-out configurations' predicted and measured seed means at the last epoch. With
    it, the retest: how one seed ranks the configurations against another seed."""
    recipe = read_recipe(path)
    tables = method_tables(pq.read_table(path), recipe)
    result: dict[str, Any] = {"surrogates": {}, "retest": {}, "folds": folds,
                              "configs": {m: len(t.configs) for m, t in tables.items()},
                              "seeds": {m: len(t.seeds) for m, t in tables.items()}}  # fmt: skip
    for surrogate in SURROGATES:
        scores: dict[str, dict[str, float | None]] = {}
        for objective in OBJECTIVES:
            pairs = {m: holdout_predictions(t, objective, surrogate, folds,
                                            np.random.default_rng(seed))
                     for m, t in tables.items()}  # fmt: skip
            scores[objective] = {m: _spearman(*p) for m, p in pairs.items()}
            pooled = (np.concatenate(x) for x in zip(*pairs.values()))
            scores[objective]["overall"] = _spearman(*pooled)
        result["surrogates"][surrogate.label()] = scores
    for objective in OBJECTIVES:
        result["retest"][objective] = {}
        for method, t in tables.items():
            final = t.curves[objective][:, :, -1]
            pairs = [(a, b) for a in range(final.shape[1]) for b in range(a + 1, final.shape[1])]
            found = [_spearman(final[:, a], final[:, b]) for a, b in pairs]
            found = [f for f in found if f is not None]
            result["retest"][objective][method] = float(np.mean(found)) if found else None
    result["surrogate"] = SURROGATES[0].label()
    result["spearman"] = result["surrogates"][result["surrogate"]]
    return result


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def print_fidelity(found: Mapping[str, Any]) -> None:
    methods = list(found["configs"])
    print(f"\nFidelity: Spearman between held-out configurations' predicted and measured seed "
          f"means at the last epoch ({found['folds']}-fold cross-validation; configurations "
          f"{found['configs']}, seeds {found['seeds']})")  # fmt: skip
    head = ("surrogate", *[f"{o} {m}" for o in OBJECTIVES for m in (*methods, "overall")])
    rows = [head]
    for label, scores in found["surrogates"].items():
        rows.append((label + (" (default)" if label == found["surrogate"] else ""),
                     *[_shown(scores[o][m]) for o in OBJECTIVES for m in (*methods, "overall")]))
    rows.append(("retest: seed vs seed", *[_shown(found["retest"][o].get(m)) if m != "overall"
                                           else "" for o in OBJECTIVES
                                           for m in (*methods, "overall")]))  # fmt: skip
    print(table(rows))


def report(path: Path, folds: int, results: Path, quick: bool, extra: Mapping[str, Any]) -> None:
    found = fidelity(path, folds)
    print_fidelity(found)
    recipe = read_recipe(path)
    record = write_result("blackbox", torch.device("cpu"), {
        "file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "size_bytes": path.stat().st_size, "rows": pq.read_metadata(path).num_rows,
        "build_seconds": recipe.get("build_seconds"), "epochs": recipe["epochs"],
        "git_commit": recipe["git_commit"], **extra, **found},
        quick=quick, folder=results)  # fmt: skip
    print(f"wrote {record}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="8 configs, 2 seeds, 3 epochs, a 2-epoch teacher, into a temp folder")
    parser.add_argument("--configs", type=int, help="configurations in all, split evenly over "
                        "the methods (default 400)")  # fmt: skip
    parser.add_argument("--seeds", type=int, help="trial seeds per configuration (default 3)")
    parser.add_argument("--epochs", type=int, help="epochs per training (default the study's 30)")
    parser.add_argument("--out", type=Path, help=f"the Parquet file (default "
                        f"{OUT.relative_to(ROOT)}; with --quick {QUICK_OUT})")  # fmt: skip
    parser.add_argument("--sobol-seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5, help="of the fidelity's cross-validation")
    parser.add_argument("--fidelity", action="store_true",
                        help="only measure the fidelity of --out, no training")
    args = parser.parse_args(argv)
    quick = {"configs": 8, "seeds": 2, "epochs": 3} if args.quick else {}
    for name, default in {"configs": 400, "seeds": 3, "epochs": study.SPEC.recipe.epochs}.items():
        if getattr(args, name) is None:
            setattr(args, name, quick.get(name, default))
    out = (args.out or (QUICK_OUT if args.quick else OUT)).resolve()
    # only the shipped file's record goes to bench/results/; any other goes beside its file
    results = RESULTS if out == OUT else out.parent
    if args.fidelity:
        report(out, args.folds, results, args.quick, {})
        return {}
    torch.set_num_threads(1)
    base = study.SMOKE if args.quick else study.SPEC
    spec = dataclasses.replace(base, recipe=dataclasses.replace(base.recipe, epochs=args.epochs))
    cache = (out.parent / "teachers" if args.quick
             else StudyStorage.of(spec.storage_path, spec.name).teacher_cache)  # fmt: skip
    began = time.perf_counter()
    recipe = build(spec, args, out, cache)
    wall = time.perf_counter() - began
    print(f"blackbox: {out} ({out.stat().st_size / 1e6:.2f} MB), this session {_minutes(wall)}, "
          f"all trainings {_minutes(recipe['build_seconds'])}")  # fmt: skip
    report(out, args.folds, results, args.quick, {"session_wall_s": wall})
    return recipe


if __name__ == "__main__":
    main()
