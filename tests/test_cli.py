"""Bad input: exit status 2, one line naming the field, no traceback, before Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


BAD_FLAGS = [
    (["--methods", "kd,nope"], "methods: unknown 'nope'"),
    (["--dataset", "mnist"], "dataset: unknown 'mnist'"),
    (["--student", "vit"], "student: unknown 'vit'"),
    (["--num-samples", "0"], "num_samples"),
    (["--lr", "-1"], "lr: must be > 0"),
    (["--objectives", "val_accuracy:max"], "objectives: unknown 'val_accuracy'"),
    (["--dataset", "cifar10", "--data-root", "."], "pass --download"),
    (["--temperature", "2"], "unrecognized arguments"),
    (["--gpus-per-trial", "1"], "gpus_per_trial: 1.0 asked, but this machine has no CUDA GPU"),
    (["--cache-teacher-logits", "--methods", "kd"], "cache_teacher_logits: random crop/flip"),
    (["--fixed", "temperature=0"], "fixed.temperature: must be > 0"),
    (["--fixed", "w_tckd=1"], "fixed.w_tckd: no method in ['kd', 'mixup_kd']"),
    (["--search", "temperature=4"], "write NAME=LOW:HIGH"),
    (["--seed", "-1"], "seed: must be >= 0"),
    (["--precision", "fp16"], "invalid choice: 'fp16'"),
    (["--scheduler", "asha"], "invalid choice: 'asha'"),
    (["--reduction-factor", "1"], "reduction_factor: must be > 1"),
    (["--grace-period", "-1"], "grace_period: must be a whole number of epochs >= 0"),
    (["--objectives", "val_acc:max,test_ece_ts:min"], "use --scheduler fifo"),
    # argparse's own errors: one line naming the flag, not the 26 lines of usage above them
    (["--grace-period", "1e9"], "--grace-period: give a whole number, got '1e9'"),
    (["--grace-period", "nan"], "--grace-period: give a whole number, got 'nan'"),
    (["--scheduler", "bogus"], "--scheduler: invalid choice: 'bogus' (choose from 'auto'"),
    (["--sampler", "bogus"], "--sampler: invalid choice: 'bogus' (choose from 'tpe'"),
    (["--fixed", "T"], "--fixed: 'T': write NAME=VALUE"),
    (["--fixed", "kd.temperature=abc"], "fixed.kd.temperature: must be a number > 0, got 'abc'"),
    (["--reduction-factor", "-2"], "reduction_factor: must be > 1"),
]

# Each case runs the study script as `python studies/temperature_sweep.py --smoke-test FLAGS`
# would, as __main__ in its own empty folder, all in one fresh interpreter (the imports of torch
# and Ray cost seconds a case): its exit status, its stderr, whether Ray started, and whether
# it wrote anything.
_RUN_CASES = """
import contextlib, io, json, os, runpy, sys
import ray
script, cases, root = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
found = []
for i, flags in enumerate(cases):
    folder = os.path.join(root, str(i))
    os.makedirs(folder)
    os.chdir(folder)
    sys.argv = [script, "--smoke-test", *flags]
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            code = stop.code
    found.append({"code": code, "stderr": stderr.getvalue(), "ray": ray.is_initialized(),
                  "wrote": os.listdir(folder)})
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    script = str(ROOT / "studies" / "temperature_sweep.py")
    root = tmp_path_factory.mktemp("bad_flags")
    cases = json.dumps([flags for flags, _ in BAD_FLAGS])
    out = _run(["-c", _RUN_CASES, script, cases, str(root)], root)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("case", "field"), enumerate(field for _, field in BAD_FLAGS),
                         ids=[" ".join(flags) for flags, _ in BAD_FLAGS])  # fmt: skip
def test_study_script_rejects_bad_flags(bad_flag_runs, case, field):
    run = bad_flag_runs[case]
    assert run["code"] == 2, run["stderr"]
    assert field in run["stderr"] and "Traceback" not in run["stderr"]
    assert len(run["stderr"].strip().splitlines()) == 1, run["stderr"]
    assert not run["ray"] and run["wrote"] == []


def test_a_bad_flag_is_one_line_from_the_command_itself(tmp_path):
    """The same path end to end, as a user types it."""
    out = _run([str(ROOT / "studies" / "temperature_sweep.py"), "--smoke-test", "--lr", "-1"],
               tmp_path)  # fmt: skip
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "kdtune: error: lr: must be > 0, got -1.0"]  # fmt: skip
    assert not (tmp_path / "ray_results").exists()


def test_kdtune_run_rejects_unknown_spec_key(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "x"\nnum_sample = 3\n')
    out = _run(["-m", "kdtune.cli", "run", str(spec)], tmp_path)
    assert out.returncode == 2 and "did you mean 'num_samples'" in out.stderr
    assert "Traceback" not in out.stderr


def test_readme_method_tables_are_the_ones_the_declarations_generate():
    from kdtune.cli import methods_markdown

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("<!-- methods:begin") : readme.index("<!-- methods:end -->")]
    assert methods_markdown() in block, "run `kdtune methods --markdown` and paste it"


def test_kdtune_methods_lists_a_methods_hyperparameters_from_its_declarations(tmp_path):
    from kdtune.methods import METHODS

    out = _run(["-m", "kdtune.cli", "methods", "dkd"], tmp_path)
    assert out.returncode == 0
    for hparam in METHODS["dkd"].hparams:
        assert hparam.name in out.stdout and hparam.meaning in out.stdout
    assert "[0.25, 4] log" in out.stdout and "mdistiller CFG.DKD" in out.stdout
    bad = _run(["-m", "kdtune.cli", "methods", "nope"], tmp_path)
    assert bad.returncode == 2 and "method: unknown 'nope'" in bad.stderr


def test_kdtune_dashboard_names_what_is_missing(tmp_path):
    out = _run(["-m", "kdtune.cli", "dashboard", str(tmp_path)], tmp_path)
    assert out.returncode == 2 and "study: no optuna.db in" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_see_them_command_survives_a_store_path_with_spaces(tmp_path):
    """The printed command, pasted into a shell, reaches the store it names."""
    import shlex

    import pyarrow as pa

    from kdtune.cli import closing_lines
    from kdtune.runner import StudyResult
    from kdtune.storage import StudyStorage

    uri = f"sqlite:///{tmp_path / 'my studies' / 'mlflow.db'}"
    empty = pa.table({"trial_id": pa.array([], pa.string())})
    result = StudyResult(empty, empty, tmp_path, "run", {}, StudyStorage.of(str(tmp_path), "s"),
                         uri, "1")  # fmt: skip
    line = next(line for line in closing_lines(result).splitlines() if "kdtune ui" in line)
    words = shlex.split(line.removeprefix("See them:").split("   then open")[0])
    assert words == ["kdtune", "ui", "--tracking-uri", uri]


def test_every_command_and_flag_of_kdtune_is_explained_in_its_help(tmp_path):
    import re

    top = _run(["-m", "kdtune.cli", "--help"], tmp_path).stdout
    commands = re.search(r"\{([a-z,]+)\}", top).group(1).split(",")
    assert {"run", "pareto", "methods", "dashboard", "ui"} <= set(commands)
    for command in commands:
        assert re.search(rf"^    {command} +\S", top, re.M), command  # each with its line
        usage = _run(["-m", "kdtune.cli", command, "--help"], tmp_path).stdout
        # argparse prints a flag without help alone on its line, its text nowhere
        flags = re.findall(r"^  (--[a-z-]+)(?: [A-Z_]+)?$\n(?! {10,}\S)", usage, re.M)
        assert flags == [], f"kdtune {command}: {flags} without help"
    assert "5000" in _run(["-m", "kdtune.cli", "ui", "--help"], tmp_path).stdout


def test_each_registry_names_what_the_cli_offers_validates_and_builds(tmp_path):
    """One table per kind of search component: each name has a factory, the spec accepts it and
    nothing else, and a study script's --help offers it with its meaning."""
    import dataclasses
    import re

    import optuna

    import studies.temperature_sweep as study
    from kdtune.config import IMPORTANCE_EVALUATORS, SAMPLERS, SCHEDULERS, ConfigError
    from kdtune.importance import EVALUATOR_FACTORIES
    from kdtune.search import SAMPLER_FACTORIES, make_sampler

    assert set(SAMPLER_FACTORIES) == set(SAMPLERS)
    assert set(EVALUATOR_FACTORIES) == set(IMPORTANCE_EVALUATORS)
    for name in SAMPLERS:
        sampler = make_sampler(dataclasses.replace(study.SPEC, sampler=name))
        assert isinstance(sampler, optuna.samplers.BaseSampler)
    for name, build in EVALUATOR_FACTORIES.items():
        assert isinstance(build(0), optuna.importance.BaseImportanceEvaluator), name
    for field, names in (("sampler", SAMPLERS), ("scheduler", SCHEDULERS),
                         ("importance_evaluator", IMPORTANCE_EVALUATORS)):  # fmt: skip
        for name in names:
            dataclasses.replace(study.SPEC, **{field: name})  # accepted
        with pytest.raises(ConfigError, match=f"^{field}: must be one of"):
            dataclasses.replace(study.SPEC, **{field: "nonesuch"})
    script = Path(study.__file__).resolve()
    usage = _run([str(script), "--help"], tmp_path).stdout
    packed = "".join(usage.split())  # argparse wraps lines at spaces and hyphens
    for flag, names in (("--sampler", SAMPLERS), ("--scheduler", SCHEDULERS)):
        assert re.search(rf"{flag} {{{','.join(names)}}}", usage), flag
        for name, meaning in names.items():
            assert "".join(f"{name}: {meaning}".split()) in packed, name
    # the README's lists name each one, and no other
    readme = (ROOT / "README.md").read_text()
    rows = {flag: next(line for line in readme.splitlines() if line.startswith(f"| `{flag}`"))
            for flag in ("--sampler", "--scheduler")}  # fmt: skip
    evaluators = re.split(r"\.\s", readme[readme.index("The evaluators, by their spec name"):])[0]
    for text, names in ((rows["--sampler"], SAMPLERS), (rows["--scheduler"], SCHEDULERS),
                        (evaluators, IMPORTANCE_EVALUATORS)):  # fmt: skip
        named = set(re.findall(r"`([a-z_0-9]+)`", text.split("|")[-2] if "|" in text else text))
        assert named == set(names), (named, text)


def _in_a_terminal(args: list[str], cwd: Path, columns: int) -> str:
    """What a command prints on a terminal `columns` wide (a pty with that window size)."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=follower,
                               stderr=follower, env=env)  # fmt: skip
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed: the command ended
            break
        if not chunk:
            break
        out += chunk
    process.wait(timeout=120)
    os.close(leader)
    return out.decode().replace("\r\n", "\n")


def test_kdtune_pareto_fits_the_terminals_width_and_a_pipe_gets_whole_rows(tmp_path):
    from kdtune import tables

    rows = [{"trial_id": f"t{i:07d}", "method": "mixup_kd", "temperature": 1.5 + i,
             "w_ce": 0.1 * i, "w_kd": 0.9 - i / 10, "alpha": 0.2 * i, "val_acc": 0.9 + i / 100,
             "val_ece": 0.05, "test_acc": 0.88, "test_ece": 0.04, "test_nll": 0.4,
             "test_ece_ts": 0.03, "pareto": i == 2, "status": "TERMINATED"}
            for i in range(3)]  # fmt: skip
    tables.write_table(tables.to_table(rows), tmp_path / "results.parquet")
    args = ["-m", "kdtune.cli", "pareto", str(tmp_path)]
    shown = _in_a_terminal(args, tmp_path, columns=72)
    assert max(len(line) for line in shown.splitlines()) <= 72, shown
    for column in set(rows[0]) - {"status"}:  # every column shown is there, in some block
        assert column in shown, column
    assert shown.count("t0000002") >= 4  # the trial leads each block, in both tables
    piped = _run(args, tmp_path).stdout
    header = next(line for line in piped.splitlines() if line.lstrip().startswith("trial_id"))
    assert "test_ece_ts" in header and len(header) > 72  # one line a row, as wide as it is
