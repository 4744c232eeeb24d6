"""Command line: `kdtune run|pareto|ui` and the flags every study script shares. No logic here.

Bad input exits with status 2 and one line naming the field, before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdtune.config import ConfigError, StudySpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _objectives(text: str) -> tuple[tuple[str, str], ...]:
    """'val_acc:max,val_ece:min' -> (("val_acc", "max"), ("val_ece", "min"))."""
    pairs = []
    for item in text.split(","):
        metric, _, mode = item.partition(":")
        if mode not in ("max", "min"):
            raise argparse.ArgumentTypeError(f"objective {item!r}: write METRIC:max or METRIC:min")
        pairs.append((metric.strip(), mode))
    return tuple(pairs)


def _number_list(kind: type, text: str) -> tuple:
    try:
        return tuple(kind(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give comma-separated {kind.__name__}s, e.g. 1,2,3"
        ) from None


def float_list(text: str) -> tuple[float, ...]:
    """'0.5,1,2' -> (0.5, 1.0, 2.0)."""
    return _number_list(float, text)


def int_list(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2)."""
    return _number_list(int, text)


def add_study_flags(parser: argparse.ArgumentParser, spec: StudySpec) -> None:
    # torch: only for the study scripts, which train anyway
    from kdtune.methods import METHODS, cacheable_methods

    r, t = spec.recipe, spec.teacher_recipe
    add = parser.add_argument
    add(
        "--smoke-test", action="store_true", help="a few seconds of training, 2 trials (used by CI)"
    )
    add("--resume", action="store_true", help="continue an interrupted study of the same --name")
    add(
        "--name",
        default=spec.name,
        help="study name: MLflow experiment and results folder (%(default)s)",
    )
    add(
        "--dataset", default=spec.dataset, help="digits (embedded), cifar10, cifar100 (%(default)s)"
    )
    add("--data-root", default=spec.data_root, help="folder holding CIFAR files (%(default)s)")
    add("--download", action="store_true", help="download CIFAR into --data-root (needs internet)")
    add("--teacher", default=spec.teacher, help="teacher model (%(default)s)")
    add("--student", default=spec.student, help="student model (%(default)s)")
    add(
        "--methods",
        "--method",
        default=",".join(spec.methods),
        help=f"comma-separated methods: {', '.join(METHODS)} (%(default)s)",
    )
    add(
        "--objectives",
        type=_objectives,
        default=spec.objectives,
        help="comma-separated METRIC:max|min (default val_acc:max,val_ece:min)",
    )
    add("--num-samples", type=int, default=spec.num_samples, help="trials (%(default)s)")
    add(
        "--max-concurrent-trials",
        type=int,
        default=spec.max_concurrent_trials,
        help="trials running at once (%(default)s)",
    )
    add("--cpus-per-trial", type=float, default=spec.cpus_per_trial, help="(%(default)s)")
    add(
        "--gpus-per-trial",
        type=float,
        default=spec.gpus_per_trial,
        help="GPUs per trial, fractions pack trials on a GPU, e.g. 0.25 (%(default)s)",
    )
    add("--epochs", type=int, default=r.epochs, help="student epochs (%(default)s)")
    add("--teacher-epochs", type=int, default=t.epochs, help="teacher epochs (%(default)s)")
    add("--batch-size", type=int, default=r.batch_size, help="(%(default)s)")
    add("--lr", type=float, default=r.lr, help="student peak learning rate (%(default)s)")
    add(
        "--compile",
        action="store_true",
        default=r.compile,
        help="torch.compile teacher and student networks (pays off on GPUs for long trainings)",
    )
    add(
        "--no-augment",
        dest="augment",
        action="store_false",
        default=r.augment,
        help="train students without the dataset's random crop/flip",
    )
    add(
        "--cache-teacher-logits",
        action="store_true",
        default=spec.cache_teacher_logits,
        help="compute the teacher's training-split logits once instead of every step (needs "
        f"--no-augment and methods among {', '.join(cacheable_methods())})",
    )
    add("--seed", type=int, default=spec.seed, help="seeds data split, teacher, trials, sampler")
    if spec.grid:
        add("--seeds", type=int_list, default=spec.trial_seeds,
            help="comma-separated trial seeds: every configuration runs once per seed "
                 "(default %(default)s)")  # fmt: skip
    else:
        add("--reseed", type=int_list, default=spec.reseed,
            help="comma-separated seeds: after the search, re-run the Pareto configurations "
                 "with them; the front of their seed means is reported (%(default)s)")  # fmt: skip
    add(
        "--storage",
        default=spec.storage_path,
        help="Ray results, checkpoints, teachers (%(default)s)",
    )
    add(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI "
        "or sqlite mlflow.db in the working folder)",
    )


def spec_from_args(args: argparse.Namespace, spec: StudySpec, smoke: StudySpec) -> StudySpec:
    """Flags override the study's spec; --smoke-test starts from its smoke spec instead."""
    base = smoke if args.smoke_test else spec
    parser_defaults = {
        "epochs": spec.recipe.epochs,
        "teacher_epochs": spec.teacher_recipe.epochs,
        "num_samples": spec.num_samples,
    }

    def chosen(name: str, smoke_value: Any) -> Any:
        value = getattr(args, name)
        # With --smoke-test, a flag left at the full study's default takes the smoke value.
        return smoke_value if args.smoke_test and value == parser_defaults.get(name) else value

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    repeats: dict[str, Any] = {}
    if base.grid:  # --methods picks among the grid's points, --seeds sets the repeats
        in_grid = list(dict.fromkeys(str(p["method"]) for p in base.grid))
        if args.methods == ",".join(spec.methods):
            methods = tuple(in_grid)
        for method in methods:
            if method not in in_grid:
                raise ConfigError(f"methods: this study has no configuration of {method!r}; "
                                  f"choose among {in_grid}")  # fmt: skip
        seeds = base.seeds if args.smoke_test and args.seeds == spec.trial_seeds else args.seeds
        repeats = {"grid": tuple(p for p in base.grid if p["method"] in methods),
                        "seeds": tuple(seeds)}  # fmt: skip
    else:
        reseed = base.reseed if args.smoke_test and args.reseed == spec.reseed else args.reseed
        repeats = {"reseed": tuple(reseed)}
    return dataclasses.replace(
        base,
        **repeats,
        name=args.name,
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download,
        teacher=args.teacher,
        student=args.student,
        methods=methods,
        objectives=args.objectives,
        num_samples=chosen("num_samples", smoke.num_samples),
        max_concurrent_trials=args.max_concurrent_trials,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        seed=args.seed,
        storage_path=args.storage,
        cache_teacher_logits=args.cache_teacher_logits,
        recipe=dataclasses.replace(
            base.recipe,
            epochs=chosen("epochs", smoke.recipe.epochs),
            batch_size=args.batch_size,
            lr=args.lr,
            augment=args.augment,
            compile=args.compile,
        ),
        teacher_recipe=dataclasses.replace(
            base.teacher_recipe,
            epochs=chosen("teacher_epochs", smoke.teacher_recipe.epochs),
            compile=args.compile,
        ),
    )


def fail(message: str) -> SystemExit:
    print(f"kdtune: error: {message}", file=sys.stderr)
    return SystemExit(2)


def run_study_script(
    spec: StudySpec, smoke: StudySpec, argv: Sequence[str] | None = None, description: str = "",
    report: Callable[[StudySpec, Any], Any] | None = None,
) -> Any:  # fmt: skip
    """The whole `main` of a study script: parse flags, run, then the study's own `report`
    (tables and figures beyond the Pareto front) on the final spec and result; bad input exits
    with status 2."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_study_flags(parser, spec)
    args = parser.parse_args(argv)
    try:
        study_spec = spec_from_args(args, spec, smoke)
        from kdtune.study import run_study

        result = run_study(study_spec, resume=args.resume, tracking_uri=args.tracking_uri)
        return report(study_spec, result) if report is not None else result
    except ConfigError as error:
        raise fail(str(error)) from None


def _run(args: argparse.Namespace) -> None:
    try:
        with open(args.spec, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise fail(f"spec file {args.spec!r}: {error}") from None
    try:
        from kdtune.study import run_study

        run_study(StudySpec.from_dict(raw), resume=args.resume, tracking_uri=args.tracking_uri)
    except ConfigError as error:
        raise fail(str(error)) from None


def _pareto(args: argparse.Namespace) -> None:
    from kdtune import results
    from kdtune.methods import METHODS
    from kdtune.study import summary_columns

    path = Path(args.results)
    if path.is_dir():
        path = path / "results.parquet"
    if not path.exists():
        raise fail(f"results: no file {str(path)!r}; give a study folder or its results.parquet")
    table = results.read_table(path)
    columns = summary_columns([m for m in METHODS if m in set(table["method"].to_pylist())])
    print(results.format_table(table, columns, title=f"All trials ({table.num_rows}):"))
    front = table.filter(table["pareto"])
    print(results.format_table(front, columns, title=f"\nPareto front ({front.num_rows}):"))


def _ui(args: argparse.Namespace) -> None:
    uri = (
        args.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    )
    # the mlflow of this interpreter, whether or not its venv is activated
    command = [sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(args.port),
               "--backend-store-uri", uri]  # fmt: skip
    print(f"kdtune: serving {uri} on http://{args.host}:{args.port} (Ctrl-C stops)")
    os.execvp(command[0], command)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kdtune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a study from a TOML spec file")
    run.add_argument("spec", help="TOML file with StudySpec fields (see README)")
    run.add_argument("--resume", action="store_true")
    run.add_argument("--tracking-uri", default=None)
    run.set_defaults(handler=_run)
    pareto = commands.add_parser("pareto", help="print the trials and Pareto front of a study")
    pareto.add_argument("results", help="a study folder (ray_results/NAME) or its results.parquet")
    pareto.set_defaults(handler=_pareto)
    ui = commands.add_parser(
        "ui", help="open the MLflow UI on this folder's store (127.0.0.1 only)"
    )
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1", help="only change this if you mean to expose it")
    ui.add_argument("--tracking-uri", default=None)
    ui.set_defaults(handler=_ui)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
