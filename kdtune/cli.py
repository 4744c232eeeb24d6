"""kdtune's command line: run a study from a spec file, print a finished study's trials and
front, list the methods, and browse a study in the MLflow UI or optuna-dashboard (on
127.0.0.1 unless --host says otherwise). Every study script takes the same flags.

Bad input exits with status 2 and one line naming the field, before Ray starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import importlib.util
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from kdtune.config import (
    PROTOCOLS,
    SAMPLERS,
    SCHEDULERS,
    ConfigError,
    StudyFailed,
    StudyInterrupted,
    StudySpec,
    benchmark_recipes,
    one_line,
)
from kdtune.hparams import format_value

if TYPE_CHECKING:
    from kdtune.runner import StudyResult

_T = TypeVar("_T")

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


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming it and what it takes, as every other bad
    input is, instead of the whole usage above argparse's message (`--help` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        flag, sep, why = message.partition(": ")
        if sep and flag.startswith("argument "):
            flags = flag.removeprefix("argument ").split("/")
            kind = re.match(r"invalid (int|float) value: (.*)", why)
            if kind:
                why = f"give a {'whole number' if kind[1] == 'int' else 'number'}, got {kind[2]}"
            message = f"{flags[-1] if flags[-1].startswith('--') else flags[0]}: {why}"
        raise fail(f"{message} (--help lists the flags)")


@dataclass(frozen=True)
class Flag:
    """A study flag that sets one spec field (`target`, "recipe.lr" for a recipe's) when given."""

    flag: str
    target: str
    kind: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


def _listed(choices: Mapping[str, str]) -> str:
    """A registry's choices for a flag's help: "name: what it is; ..."."""
    return "; ".join(f"{name}: {meaning}" for name, meaning in choices.items())


FLAGS = (
    Flag("--name", "name", str, "study name: MLflow experiment and results folder"),
    Flag("--dataset", "dataset", str, "digits (embedded), cifar10, cifar100"),
    Flag("--data-root", "data_root", str, "folder holding the CIFAR files"),
    Flag("--teacher", "teacher", str, "teacher model"),
    Flag("--student", "student", str, "student model"),
    Flag("--teacher-checkpoint", "teacher_checkpoint", str,
         "a trained teacher's state dict (e.g. mdistiller's published CIFAR-100 teachers) to "
         "use instead of training one"),
    Flag("--objectives", "objectives", _objectives, "comma-separated METRIC:max|min"),
    Flag("--num-samples", "num_samples", int, "trials of a search"),
    Flag("--front-seeds", "front_seeds", int,
         "a search's front measured over up to this many seeds: configurations on or near it "
         "run again with seeds seed+1, seed+2, ... until clearly on or off it; 1 = off"),
    Flag("--max-concurrent-trials", "max_concurrent_trials", int, "trials running at once"),
    Flag("--cpus-per-trial", "cpus_per_trial", float, "CPUs each trial holds"),
    Flag("--gpus-per-trial", "gpus_per_trial", float,
         "GPUs per trial; fractions pack trials on a GPU, e.g. 0.25"),
    Flag("--epochs", "recipe.epochs", int, "student epochs"),
    Flag("--teacher-epochs", "teacher_recipe.epochs", int, "teacher epochs"),
    Flag("--batch-size", "recipe.batch_size", int, "student batch size"),
    Flag("--lr", "recipe.lr", float, "student peak learning rate"),
    Flag("--precision", "recipe.precision", str,
         "networks in bf16 autocast or fp32; auto = bf16 on CUDA", ("auto", "fp32", "bf16")),
    Flag("--scheduler", "scheduler", str, "early stopping: " + _listed(SCHEDULERS),
         tuple(SCHEDULERS)),
    Flag("--grace-period", "grace_period", int,
         "epochs before MO-ASHA's first rung (0 = epochs / reduction factor^2)"),
    Flag("--reduction-factor", "reduction_factor", float,
         "each MO-ASHA rung lets on the best 1/this of its trials"),
    Flag("--sampler", "sampler", str, "Optuna's sampler: " + _listed(SAMPLERS), tuple(SAMPLERS)),
    Flag("--optuna-storage", "optuna_storage", str,
         "SQLAlchemy URL of the Optuna study (empty: optuna.db in the study folder)"),
    Flag("--protocol", "protocol", str,
         "search: a validation split held out, nothing selected on test; cifar_benchmark: the "
         "CIFAR-100 KD tables' protocol (all training images, the step recipe of 240 epochs "
         "unless flags say otherwise, test_* objectives)", PROTOCOLS),
    Flag("--seed", "seed", int, "seeds the data split, the teacher, the trials and the sampler"),
    Flag("--storage", "storage_path", str, "Ray results, checkpoints, cached teachers"),
    Flag("--simulate-epoch-s", "simulate_epoch_s", float,
         "with --simulate: the seconds that stand for one replayed epoch"),
)  # fmt: skip


def _spec_value(spec: StudySpec, target: str) -> Any:
    value: Any = spec
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _default_text(spec: StudySpec, smoke: StudySpec, target: str) -> str:
    full, small = _spec_value(spec, target), _spec_value(smoke, target)
    shown = ",".join(f"{m}:{d}" for m, d in full) if target == "objectives" else format_value(full)
    return f"default {shown}" + ("" if small == full else f"; {format_value(small)} with "
                                 "--smoke-test")  # fmt: skip


def _hparam_values(text: str) -> dict[str, Any]:
    """'temperature=4,pick=t_ent,topk_scale=true' -> {"temperature": 4, ...}; each value is
    checked against its declaration when the spec is validated."""
    values: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"{item!r}: write NAME=VALUE, e.g. temperature=4")
        values[name.strip()] = _literal(raw.strip())
    return values


def _literal(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _search_ranges(text: str) -> dict[str, tuple[float, float]]:
    """'temperature=1:8,lskd.w_kd=2:10' -> {"temperature": (1.0, 8.0), "lskd.w_kd": (2.0, 10.0)}."""
    ranges = {}
    for name, bounds in _hparam_values(text).items():
        low, sep, high = str(bounds).partition(":")
        try:
            ranges[name] = (float(low), float(high))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name}={bounds}: write NAME=LOW:HIGH, e.g. temperature=1:8") from None
        if not sep:
            raise argparse.ArgumentTypeError(f"{name}={bounds}: write NAME=LOW:HIGH")
    return ranges


RESUME_HELP = ("continue an interrupted study of the same --name from its study folder: its "
               "finished trials are kept, its search goes on where it stopped (README, 'What "
               "survives what')")  # fmt: skip
VERBOSE_HELP = "also show Ray's, Tune's, MLflow's and Optuna's own messages"
TRACKING_URI_HELP = ("the MLflow store to record into (default: $MLFLOW_TRACKING_URI, else "
                     "sqlite:///mlflow.db in the working folder)")  # fmt: skip


def add_study_flags(parser: argparse.ArgumentParser, spec: StudySpec, smoke: StudySpec) -> None:
    """Every flag defaults to "not given" (None): a flag that is given wins over the study's
    values and the smoke test's alike; the help shows what applies when it is not."""
    from kdtune.blackbox import DEFAULT_PATH
    from kdtune.methods import METHODS, cacheable_methods
    from kdtune.models import MODELS

    add = parser.add_argument
    add("--simulate", nargs="?", const=str(DEFAULT_PATH), default=None, metavar="BLACKBOX",
        help="replay a learning-curve blackbox instead of training, to try the study's set-up "
             "(concurrency, GPUs per trial declared to Ray, MLflow, progress) in minutes: "
             f"no data, teacher or GPU is touched (default file: {DEFAULT_PATH}; README)")
    add("--smoke-test", action="store_true", help="a few seconds of training, 2 trials (CI)")
    add("--resume", action="store_true", help=RESUME_HELP)
    add("--verbose", action="store_true", help=VERBOSE_HELP)
    for flag in FLAGS:
        extra = f"; one of {', '.join(MODELS)}" if flag.dest in ("teacher", "student") else ""
        add(flag.flag, type=flag.kind, default=None, choices=flag.choices,
            help=f"{flag.help}{extra} ({_default_text(spec, smoke, flag.target)})")  # fmt: skip
    add("--download", action="store_true", default=None,
        help="download CIFAR into --data-root (needs internet)")
    add("--methods", "--method", default=None,
        help=f"comma-separated methods among {', '.join(METHODS)}; `kdtune methods` describes "
             f"them (default {','.join(spec.methods)})")
    names = dict.fromkeys(h.name for m in spec.methods if m in METHODS for h in METHODS[m].hparams)
    add("--fixed", type=_hparam_values, default=None, metavar="NAME=VALUE,...",
        help="hold hyperparameters at these values, e.g. w_ce=0,dkd.w_nckd=6 (a METHOD. prefix "
             f"scopes one to a method); this study's: {', '.join(names) or 'none'} (`kdtune "
             "methods METHOD` says what each means)")
    add("--search", type=_search_ranges, default=None, metavar="NAME=LOW:HIGH,...",
        help="search these hyperparameters over these ranges instead of their declared ones, "
             "e.g. temperature=1:8")
    add("--compile", action="store_true", default=None,
        help="torch.compile teacher and student networks (pays off on GPUs for long trainings)")
    add("--no-augment", dest="augment", action="store_false", default=None,
        help="train students without the dataset's random crop/flip")
    add("--cache-teacher-logits", action="store_true", default=None,
        help="compute the teacher's training-split logits once instead of every step (needs "
             f"--no-augment and methods among {', '.join(cacheable_methods())})")
    if spec.grid:
        add("--seeds", type=int_list, default=None,
            help="comma-separated trial seeds: every configuration runs once per seed "
                 f"(default {format_value(spec.trial_seeds)}; {format_value(smoke.trial_seeds)} "
                 "with --smoke-test)")
    else:
        add("--reseed", type=int_list, default=None,
            help="comma-separated seeds: after the search, re-run the Pareto configurations "
                 "with them; the front of their seed means is reported (default "
                 f"{format_value(spec.reseed) or 'none'})")
    add("--tracking-uri", default=None, help=TRACKING_URI_HELP)


def _picked_methods(args: argparse.Namespace, base: StudySpec) -> dict[str, Any]:
    """--methods, and for a grid study the points of those methods and --seeds."""
    given = None
    if args.methods is not None:
        given = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not base.grid:
        changes: dict[str, Any] = {} if given is None else {"methods": given}
        return changes | ({} if args.reseed is None else {"reseed": tuple(args.reseed)})
    in_grid = list(dict.fromkeys(str(p["method"]) for p in base.grid))
    methods = given if given is not None else tuple(in_grid)
    for method in methods:
        if method not in in_grid:
            raise ConfigError(f"methods: this study has no configuration of {method!r}; "
                              f"choose among {in_grid}")  # fmt: skip
    seeds = base.seeds if args.seeds is None else tuple(args.seeds)
    return {"methods": methods, "grid": tuple(p for p in base.grid if p["method"] in methods),
            "seeds": seeds}  # fmt: skip


def spec_from_args(args: argparse.Namespace, spec: StudySpec, smoke: StudySpec) -> StudySpec:
    """The study's spec (its smoke spec with --smoke-test), with every flag given applied."""
    base = smoke if args.smoke_test else spec
    changes: dict[str, Any] = _picked_methods(args, base)
    recipes: dict[str, dict[str, Any]] = {"recipe": {}, "teacher_recipe": {}}
    for flag in FLAGS:
        value = getattr(args, flag.dest)
        if value is not None:
            where, _, field = flag.target.rpartition(".")
            (recipes[where] if where else changes)[field] = value
    if changes.get("objectives", base.objectives) != base.objectives:
        changes["reference_point"] = ()  # the study's is one value per objective of its own
    if args.compile:
        recipes["recipe"]["compile"] = recipes["teacher_recipe"]["compile"] = True
    if args.augment is not None:
        recipes["recipe"]["augment"] = args.augment
    for name in ("download", "cache_teacher_logits"):
        if getattr(args, name):
            changes[name] = True
    if args.simulate is not None:
        changes["simulate"] = args.simulate
    if args.fixed is not None:
        changes["fixed"] = {**base.fixed, **args.fixed}
    if args.search is not None:
        changes["search"] = {**base.search, **args.search}
    bases = {name: getattr(base, name) for name in recipes}
    if changes.get("protocol") == "cifar_benchmark" != base.protocol:  # its preset recipes
        bases = benchmark_recipes(**{model: changes.get(model, getattr(base, model))
                                     for model in ("student", "teacher")})  # fmt: skip
        if args.smoke_test:  # still a few seconds of training
            bases = {name: dataclasses.replace(recipe, epochs=getattr(base, name).epochs)
                     for name, recipe in bases.items()}  # fmt: skip
    for name, values in recipes.items():
        changes[name] = dataclasses.replace(bases[name], **values)
    return dataclasses.replace(base, **changes)


def fail(message: str) -> SystemExit:
    print(f"kdtune: error: {message}", file=sys.stderr)
    return SystemExit(2)


def guarded(run: Callable[[], _T]) -> _T:
    """Run a study as a command does, ending in one line, never a traceback: bad input, exit
    status 2; an interrupted study and how to continue it, 130 (as for Ctrl-C); anything else,
    1, with the traceback kept in a file for a bug report."""
    try:
        return run()
    except ConfigError as error:
        raise fail(str(error)) from None
    except StudyInterrupted as stopped:
        print(f"kdtune: {stopped}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as error:
        message = str(error) if isinstance(error, StudyFailed) else one_line(error)
        print(f"kdtune: error: {message}{_traceback_note()}", file=sys.stderr)
        raise SystemExit(1) from None


def _traceback_note() -> str:
    path = Path(tempfile.gettempdir()) / f"kdtune-error-{os.getpid()}.txt"
    try:
        path.write_text(traceback.format_exc())
    except OSError:  # a full disk: the line alone must do
        return ""
    return f" (traceback: {path})"


def closing_lines(result: StudyResult) -> str:
    """The last thing a study prints: every file it wrote, and how to see it all in MLflow."""
    from kdtune.tracking import is_server, run_route, ui_address  # MLflow: once a study has run

    local = not is_server(result.tracking_uri)
    where = result.link or run_route(result.experiment_id, result.parent_run_id)
    lines = [f"\nThe study wrote, in {result.study_dir}:"]
    lines += [f"  {path.name}" for path in result.files]
    lines.append("and logged them on its MLflow parent run, with one child run per trial.")
    if local:
        lines.append(f"See them:  kdtune ui --tracking-uri {shlex.quote(result.tracking_uri)}   "
                     f"then open {ui_address(result.tracking_uri)}/{where}")  # fmt: skip
    else:
        lines.append(f"See them:  {ui_address(result.tracking_uri)}/{where}")
    if (result.study_dir / "optuna.db").exists():
        lines.append(f"The search's Optuna study is in optuna.db there:  kdtune dashboard "
                     f"{shlex.quote(str(result.study_dir))}")  # fmt: skip
    return "\n".join(lines)


def run_study_script(
    spec: StudySpec, smoke: StudySpec, argv: Sequence[str] | None = None, description: str = "",
    report: Callable[[StudySpec, Any], Any] | None = None,
) -> Any:  # fmt: skip
    """The whole `main` of a study script: parse flags, run, then the study's own `report`
    (tables and figures beyond the Pareto front) on the final spec and result; bad input exits
    with status 2."""
    parser = OneLineParser(description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_flags(parser, spec, smoke)
    args = parser.parse_args(argv)

    def run() -> Any:
        study_spec = spec_from_args(args, spec, smoke)
        from kdtune.cluster import set_verbosity
        from kdtune.study import run_study

        set_verbosity(args.verbose)
        result = run_study(study_spec, resume=args.resume, tracking_uri=args.tracking_uri,
                           question=question_of(description))  # fmt: skip
        reported = report(study_spec, result) if report is not None else result
        print(closing_lines(result))  # after the study's own tables: the last word
        return reported

    return guarded(run)


def question_of(description: str) -> str:
    """A study script's question: the first line of its docstring."""
    return description.strip().splitlines()[0] if description.strip() else ""


def _run(args: argparse.Namespace) -> None:
    try:
        with open(args.spec, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else str(error)
        raise fail(f"spec file {args.spec!r}: {reason}; give a TOML file of StudySpec "
                   "fields (README)") from None  # fmt: skip
    if not raw:
        raise fail(f"spec file {args.spec!r} is empty; give at least `name` and `methods` "
                   "(README), or run a study script for its defaults")  # fmt: skip

    def run() -> None:
        from kdtune.cluster import set_verbosity
        from kdtune.study import run_study

        set_verbosity(args.verbose)
        result = run_study(StudySpec.from_dict(raw), resume=args.resume,
                           tracking_uri=args.tracking_uri, question=f"Study {args.spec}")
        print(closing_lines(result))

    guarded(run)


def _pareto(args: argparse.Namespace) -> None:
    from kdtune import tables
    from kdtune.methods import declarations
    from kdtune.outcome import format_tables

    path = Path(args.results)
    if path.is_dir():
        path = path / "results.parquet"
    if not path.exists():
        raise fail(f"results: no file {str(path)!r}; give a study folder or its results.parquet")
    try:
        table = tables.read_table(path)
        front_path = path.parent / "pareto.parquet"  # a row per configuration, its seed means
        front = (tables.read_table(front_path) if front_path.exists()
                 else table.filter(table["pareto"]))  # fmt: skip
    except Exception as error:  # damaged, or not a kdtune table
        raise fail(f"results: cannot read {str(path)!r} as a kdtune results table "
                   f"({one_line(error)}); run the study with --resume to write it again") from None
    print(format_tables(table, front, declarations(), front_title="Pareto front").lstrip("\n"))


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"
                     for line in lines)  # fmt: skip


def methods_markdown() -> str:
    """The README's method and hyperparameter tables, from the declarations alone."""
    from kdtune.hparams import by_name
    from kdtune.methods import METHODS, declarations

    def settings(method: Any) -> str:
        return ", ".join(f"{h.name} {format_value(h.default)}"
                         + (f" (searched {h.search_text()})" if h.searched else "")
                         for h in method.hparams) or "-"  # fmt: skip

    methods = _markdown(["key", "what one training step does", "hyperparameters: default "
                         "(default search range)", "source"],
                        [[f"`{name}`", m.summary, settings(m), m.reference]
                         for name, m in METHODS.items()])  # fmt: skip
    names = _markdown(["name", "type", "valid values", "meaning"],
                      [[f"`{name}`", uses[0][1].kind.__name__, uses[0][1].valid_text(),
                        uses[0][1].meaning] for name, uses in by_name(declarations()).items()])
    return f"{methods}\n\n{names}"


def _methods(args: argparse.Namespace) -> None:
    from kdtune.methods import METHODS

    if args.markdown:
        print(methods_markdown())
        return
    if args.method is None:
        for name, method in METHODS.items():
            print(f"{name:14} {method.summary}\n{'':14} ({method.reference})")
        print("\n`kdtune methods METHOD` lists a method's hyperparameters.")
        return
    if args.method not in METHODS:
        raise fail(f"method: unknown {args.method!r}; choose one of {sorted(METHODS)}")
    method = METHODS[args.method]
    print(f"{args.method}: {method.summary}\nsource: {method.reference}\n")
    rows = [["name", "type", "default", "valid", "searched over"]]
    rows += [[h.name, h.kind.__name__, format_value(h.default), h.valid_text(), h.search_text()]
             for h in method.hparams]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row, hparam in zip(rows, [None, *method.hparams]):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if hparam is not None:
            print(f"    {hparam.meaning} (default: {hparam.source})")
    if not method.hparams:
        print("(no hyperparameters)")


def _dashboard(args: argparse.Namespace) -> None:
    """optuna-dashboard on a study's Optuna storage, on 127.0.0.1 unless told otherwise."""
    target = Path(args.study)
    url = f"sqlite:///{(target / 'optuna.db').resolve()}" if target.is_dir() else args.study
    if target.is_dir() and not (target / "optuna.db").exists():
        raise fail(f"study: no optuna.db in {str(target)!r}; give a search's study folder "
                   "(ray_results/NAME) or its Optuna storage URL")  # fmt: skip
    check_port(args.host, args.port)
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise fail("optuna-dashboard is missing from this environment, though kdtune depends on "
                   "it: pip install optuna-dashboard")  # fmt: skip
    # optuna-dashboard of this interpreter, whether or not its venv is activated
    command = [sys.executable, "-c", "from optuna_dashboard._cli import main; main()", url,
               "--host", args.host, "--port", str(args.port), "--quiet"]  # fmt: skip
    print(f"kdtune: the Optuna study at {url} on http://{args.host}:{args.port} (Ctrl-C stops)")
    os.execvp(command[0], command)


UI_START_TIMEOUT_S = 180.0  # MLflow's UI took a minute to answer on a busy 2-core machine
# the server runs on this machine: an http_proxy of the environment must not be asked for it
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def check_port(host: str, port: int) -> None:
    """A server's port, checked before the server starts: MLflow's own answer to a port in use
    is a line after which it keeps running, and to one out of range a traceback."""
    if not 1 <= port <= 65535:
        raise fail(f"port: {port} is not a TCP port; give one in 1-65535, e.g. --port 5000")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise fail(f"host: cannot resolve {host!r} ({error.strerror}); give an address of this "
                   "machine, e.g. 127.0.0.1") from None  # fmt: skip
    with socket.socket(family, kind, proto) as probe:
        # as the servers bind: a port whose last connections are closing (TIME_WAIT) is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise fail(f"port: {port} on {host} is in use (another kdtune ui?); give another "
                           "--port, or stop what listens there") from None  # fmt: skip
            raise fail(f"host: cannot listen on {host} ({error.strerror}); give an address of "
                       "this machine, e.g. 127.0.0.1") from None  # fmt: skip


def _ui(args: argparse.Namespace) -> None:
    """The MLflow UI on a store that exists, said to serve once it answers, stopped with all of
    its processes (uvicorn's workers, MLflow's job runner) however kdtune ui ends."""
    check_port(args.host, args.port)
    if args.workers < 1:
        raise fail(f"workers: {args.workers} worker processes cannot serve; give --workers 1 "
                   "or more (1 serves one person)")  # fmt: skip
    uri = (
        args.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    )

    def check() -> None:
        from kdtune.tracking import check_existing_store

        check_existing_store(uri)

    guarded(check)
    # the mlflow of this interpreter, whether or not its venv is activated
    command = [sys.executable, "-m", "mlflow", "ui", "--host", args.host, "--port", str(args.port),
               "--backend-store-uri", uri, "--workers", str(args.workers)]  # fmt: skip
    # MLflow's job runner (8 processes, ~1.9 GiB) serves GenAI jobs; no kdtune page uses one
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    url = f"http://{_url_host(args.host)}:{args.port}"
    handle, log = tempfile.mkstemp(prefix="kdtune-ui-", suffix=".log")
    for stop in (signal.SIGTERM, signal.SIGHUP):  # a scheduler, a closed terminal: as Ctrl-C
        signal.signal(stop, _interrupt)
    # its own process group, so that stopping it stops every process it started
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=handle, env=environment,
                              stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        os.close(handle)
        _wait_until_serving(server, url, log)
        print(f"kdtune: serving {uri} on http://{args.host}:{args.port} (Ctrl-C stops; MLflow's "
              f"log: {log})\n{studies_lines(uri, url)}", flush=True)
        code = server.wait()
        raise _server_failed(f"MLflow's UI ended (exit status {code})", log)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_group(server)


def studies_lines(uri: str, url: str, most: int = 10) -> str:
    """Where to click: each study's trials (the experiment changed last first), since the UI's
    experiment list opens a study on MLflow's GenAI overview, not on its runs."""
    from kdtune.tracking import MODEL_TRAINING_UI, study_experiments, view_link

    studies = study_experiments(uri)
    every = f"{url}/#/experiments?{MODEL_TRAINING_UI}"
    if not studies:
        return f"open {every} (no kdtune study in this store yet)"
    width = max(len(name) for name, _ in studies[:most])
    lines = ["its studies' trials:"]
    lines += [f"  {name:{width}}  {url}/{view_link(experiment_id)}"
              for name, experiment_id in studies[:most]]  # fmt: skip
    if len(studies) > most:
        lines.append(f"  and {len(studies) - most} more: {every}")
    return "\n".join(lines)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _url_host(host: str) -> str:
    """Where this machine reaches a server listening on `host`."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


def _wait_until_serving(server: subprocess.Popen, url: str, log: str) -> None:
    deadline = time.monotonic() + UI_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise _server_failed(f"MLflow's UI ended (exit status {server.returncode}) before "
                                 f"it answered on {url}", log)  # fmt: skip
        try:
            with _DIRECT.open(f"{url}/health", timeout=2):
                return
        except OSError:  # not listening yet, or not ready to answer
            time.sleep(0.5)
    raise _server_failed(f"MLflow's UI did not answer on {url} within {UI_START_TIMEOUT_S:.0f} s",
                         log)  # fmt: skip


def _server_failed(what: str, log: str) -> SystemExit:
    """One line: what happened, MLflow's last words and where the rest of them are; status 1."""
    try:
        lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()]
    except OSError:
        lines = []
    last = next((line for line in reversed(lines) if line), "")
    said = f": {last[:300]}" if last else ""
    print(f"kdtune: error: {what}{said} (MLflow's log: {log})", file=sys.stderr)
    return SystemExit(1)


def _stop_group(server: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after `grace_s`."""
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C waits too
        signal.signal(stop, signal.SIG_IGN)
    for stop, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, stop)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while _group_alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _group_alive(server):
            break
    server.wait()


def _group_alive(server: subprocess.Popen) -> bool:
    server.poll()  # reaps the leader once it has ended
    try:
        os.killpg(server.pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = OneLineParser(prog="kdtune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a study from a TOML spec file")
    run.add_argument("spec", help="TOML file with StudySpec fields (see README)")
    run.add_argument("--resume", action="store_true", help=RESUME_HELP)
    run.add_argument("--tracking-uri", default=None, help=TRACKING_URI_HELP)
    run.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    run.set_defaults(handler=_run)
    pareto = commands.add_parser("pareto", help="print the trials and Pareto front of a study")
    pareto.add_argument("results", help="a study folder (ray_results/NAME) or its results.parquet")
    pareto.set_defaults(handler=_pareto)
    methods = commands.add_parser("methods", help="the methods and their hyperparameters")
    methods.add_argument("method", nargs="?", help="one method: its hyperparameters in full")
    methods.add_argument("--markdown", action="store_true", help="the README's tables")
    methods.set_defaults(handler=_methods)
    dashboard = commands.add_parser(
        "dashboard", help="optuna-dashboard on a search's Optuna study (127.0.0.1 only)")
    dashboard.add_argument("study", help="a study folder (ray_results/NAME) or a storage URL")
    dashboard.add_argument("--port", type=int, default=8080, help="(default 8080)")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="only change this if you mean to expose it")
    dashboard.set_defaults(handler=_dashboard)
    ui = commands.add_parser(
        "ui", help="open the MLflow UI on this folder's store (127.0.0.1 only)"
    )
    ui.add_argument("--port", type=int, default=5000, help="(default 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="only change this if you mean to expose it")
    ui.add_argument("--workers", type=int, default=1,
                    help="MLflow UI worker processes (default 1, enough for one person; MLflow's "
                         "own default is 4)")  # fmt: skip
    ui.add_argument("--tracking-uri", default=None,
                    help="the MLflow store to serve (default: $MLFLOW_TRACKING_URI, else "
                         "sqlite:///mlflow.db in the working folder)")  # fmt: skip
    ui.set_defaults(handler=_ui)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
