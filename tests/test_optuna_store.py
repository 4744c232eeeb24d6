"""The Optuna store (issue #27): checked before Ray, MLflow or the data, as the MLflow store is;
never a study that kdtune did not make for this study taken, replaced or deleted; a resume
with another spec or of a study that never ran refused. Each case exits 2 with one line."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time

import optuna
import pytest

from tests.helpers.runs import run

SQLITE_HEADER = b"SQLite format 3\x00"


def _main(main, argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code, capsys.readouterr().err


def _one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1, err[-2000:]
    for needle in needles:
        assert needle in err, err


def _broken_optuna_stores(tmp_path) -> list[tuple[str, str]]:
    truncated = tmp_path / "truncated.db"
    optuna.create_study(study_name="cut", storage=f"sqlite:///{truncated}")
    truncated.write_bytes(truncated.read_bytes()[: 3 * 4096 + 100])  # a disk that filled up
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(SQLITE_HEADER + os.urandom(8192))
    mlflow_store = tmp_path / "mlflow.db"
    with sqlite3.connect(mlflow_store) as connection:  # what MLflow's schema begins with
        connection.execute("create table experiments (experiment_id integer)")
        connection.execute("create table alembic_version (version_num text)")
    return [
        ("sqlite//no-colon", "is not a database URL"),
        ("foo://x/y", "no database driver for 'foo'"),
        ("postgresql+nosuchdriver://user@127.0.0.1:9/db", "no database driver"),
        # without its driver here (with it: nothing listens on port 9, "cannot open")
        ("postgresql://user@127.0.0.1:9/db", "postgresql://user@127.0.0.1:9/db "),
        (f"sqlite:///{tmp_path / 'missing' / 'optuna.db'}", "does not exist"),
        (f"sqlite:///{truncated}", "is not a sound SQLite database"),
        (f"sqlite:///{corrupt}", "is not a sound SQLite database"),
        (f"sqlite:///{mlflow_store}", "holds another program's tables (alembic_version, "
                                      "experiments; MLflow's tracking store?)"),
    ]


def test_an_optuna_store_that_cannot_be_used_is_one_line_before_anything_starts(
        tmp_path, capsys, monkeypatch):  # fmt: skip
    import studies.temperature_sweep as study

    monkeypatch.chdir(tmp_path)
    for url, message in _broken_optuna_stores(tmp_path):
        before = (tmp_path / "mlflow.db").read_bytes()
        began = time.monotonic()
        code, err = _main(study.main, ["--smoke-test", "--optuna-storage", url,
                                       "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          capsys)  # fmt: skip
        _one_line(code, err, "optuna_storage:", message)
        assert time.monotonic() - began < 30  # no data, teacher or Ray
        assert not list((tmp_path / "ray_results").glob("*/mlflow_parent_run_id"))
        assert (tmp_path / "mlflow.db").read_bytes() == before  # no Optuna table added


def test_a_read_only_optuna_store_is_one_line(tmp_path, capsys, monkeypatch):
    import studies.temperature_sweep as study

    monkeypatch.chdir(tmp_path)
    store = tmp_path / "optuna.db"
    optuna.create_study(study_name="other", storage=f"sqlite:///{store}")
    if subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here (root writes any file whatever its mode)")
    try:
        code, err = _main(study.main, ["--smoke-test", "--optuna-storage", f"sqlite:///{store}",
                                       "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          capsys)  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)
    _one_line(code, err, "optuna_storage:", "is read-only")


@pytest.mark.slow
def test_a_shared_optuna_store_never_loses_or_swaps_a_study(tmp_path):
    """One real search in a shared Optuna store, then every way the issue found to lose or mix
    up its Optuna study: each refused with one line, its trials untouched."""
    from tests.helpers.runs import ROOT

    shared = f"sqlite:///{tmp_path / 'shared.db'}"

    def sweep(storage: str, *flags: str) -> list[str]:
        return [sys.executable, str(ROOT / "studies" / "temperature_sweep.py"), "--smoke-test",
                "--name", "twin", "--storage", str(tmp_path / storage), "--tracking-uri",
                f"sqlite:///{tmp_path / 'mlflow.db'}", *flags]  # fmt: skip

    first = run(sweep("a", "--optuna-storage", shared), tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    def trials_in(url: str) -> list:
        return optuna.load_study(study_name="twin", storage=url).trials

    kept = [(t.number, t.state, t.values) for t in trials_in(shared)]
    assert len(kept) == 2

    def refused(command: list[str], *needles: str) -> None:
        began = time.monotonic()
        done = run(command, tmp_path)
        _one_line(done.returncode, done.stderr, *needles)
        assert time.monotonic() - began < 60  # refused before data, teacher or Ray
        assert [(t.number, t.state, t.values) for t in trials_in(shared)] == kept

    # the same name in another folder, one --optuna-storage: once replaced the first's study
    refused(sweep("b", "--optuna-storage", shared), "optuna_storage:",
            "another kdtune study's (same name, another folder)")
    # a study kdtune did not make, under the name
    foreign = f"sqlite:///{tmp_path / 'foreign.db'}"
    optuna.create_study(study_name="twin", storage=foreign)
    refused(sweep("c", "--optuna-storage", foreign), "a study that kdtune did not make")
    # --resume of a name that never ran: once started a new study in silence
    refused([*sweep("never"), "--resume"], "name: no study 'twin' has run in")
    # --resume with another spec: once went on under the new one
    for flags, field in ((["--epochs", "3"], "recipe.epochs: 2 -> 3"),
                         (["--objectives", "val_acc:max,val_nll:min"], "objectives:"),
                         (["--methods", "kd"], "methods:"),
                         (["--reduction-factor", "2"], "reduction_factor: 3.0 -> 2")):  # fmt: skip
        refused([*sweep("a", "--optuna-storage", shared, *flags), "--resume"],
                "resume: the study began with another spec", field)
    # a swapped-in optuna.db of another study, on --resume: once went on with an empty study
    own = sweep("d")
    assert run(own, tmp_path).returncode == 0
    shutil.copy(tmp_path / "foreign.db", tmp_path / "d" / "twin" / "optuna.db")
    refused([*own, "--resume"], "holds an Optuna study 'twin'", "cannot resume")
    (tmp_path / "d" / "twin" / "optuna.db").unlink()
    optuna.create_study(study_name="else", storage=f"sqlite:///{tmp_path / 'd/twin/optuna.db'}")
    refused([*own, "--resume"], "holds no Optuna study 'twin' to resume")
    # more trials on a resume: Tune keeps its own count, and the study says so
    more = run([*sweep("a", "--optuna-storage", shared, "--num-samples", "4"), "--resume"],
               tmp_path)  # fmt: skip
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert "a resume keeps the first launch's num_samples = 2" in more.stdout
