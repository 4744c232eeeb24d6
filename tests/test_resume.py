"""An interrupted search, resumed, reads as one uninterrupted search would (issue #27): every
configuration once, every trial it printed in its tables as printed, Optuna's trials the study's
own. Real processes, real signals, the record read back (slow)."""

from __future__ import annotations

import os
import re
import signal
import sys
import tarfile
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.runs import ROOT, record, run, start

pytestmark = pytest.mark.slow
PRINTED = re.compile(r"trial \d+/\d+ (\w+) \S+: val_acc ([\d.]+)\s+val_ece ([\d.]+)")
STOPPED = re.compile(r"stopped at epoch (\d+)")
SEARCHED = ("temperature", "w_ce", "w_kd", "alpha")


def search(tmp_path: Path, trials: int) -> list[str]:
    """The default search (TPE, MO-ASHA) on its smoke recipe, 9 epochs (rungs at 1 and 3)."""
    return [sys.executable, str(ROOT / "studies" / "temperature_sweep.py"), "--smoke-test",
            "--name", "halted",
            "--num-samples", str(trials), "--epochs", "9", "--storage", str(tmp_path / "ray"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip


def interrupt_and_resume(tmp_path: Path, trials: int, after: int, sig: int) -> dict[str, tuple]:
    """Run the search, send `sig` once `after` trials have ended, resume it; the ended trials'
    printed (val_acc, val_ece, stopped_at) by trial id."""
    command = search(tmp_path, trials)
    first = start(command, tmp_path)
    printed: dict[str, tuple] = {}
    assert first.stdout is not None
    for line in first.stdout:
        if found := PRINTED.match(line):
            stopped = STOPPED.search(line)
            printed[found[1]] = (float(found[2]), float(found[3]),
                                 int(stopped[1]) if stopped else None)  # fmt: skip
            if len(printed) == after:
                if sig == signal.SIGKILL:  # the driver and its Ray processes, as an OOM kill
                    os.killpg(first.pid, sig)
                else:
                    first.send_signal(sig)
                break
    first.communicate(timeout=120)
    assert len(printed) == after
    second = run([*command, "--resume"], tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return printed


def assert_one_uninterrupted_search(tmp_path: Path, trials: int, printed: dict[str, tuple]):
    """`trials` searched ones, each configuration once; then the replicates of configurations
    that ran their budget, each with a seed of its own; every trial printed as printed; Optuna
    told of the searched trials alone, and that the search ended; one child run per trial."""
    rows = pq.read_table(tmp_path / "ray" / "halted" / "results.parquet").to_pylist()
    searched = [r for r in rows if r["seed"] == 0]
    assert len(searched) == trials
    configurations = {tuple(r.get(k) for k in ("method", *SEARCHED)) for r in searched}
    assert len(configurations) == trials, "a configuration ran twice"
    full = {r["config_key"] for r in searched if r["status"] == "TERMINATED"}
    seeded = [(r["config_key"], r["seed"]) for r in rows]
    assert len(set(seeded)) == len(seeded), "a configuration ran a seed twice"
    assert {key for key, seed in seeded if seed != 0} <= full
    assert len(rows) - trials <= 2 * -(-trials // 4)  # the replicates' budget
    by_id = {r["trial_id"]: r for r in rows}
    for trial_id, (val_acc, val_ece, stopped) in printed.items():  # as printed before the stop
        row = by_id[trial_id]
        assert (round(row["val_acc"], 4), round(row["val_ece"], 4)) == (val_acc, val_ece)
        assert row["stopped_at"] == stopped
    searched = optuna.load_study(study_name="halted",
                                 storage=f"sqlite:///{tmp_path / 'ray' / 'halted' / 'optuna.db'}")
    assert sorted(t.user_attrs["tune_trial_id"] for t in searched.trials) == sorted(
        r["trial_id"] for r in rows if r["seed"] == 0)
    assert {t.state.name for t in searched.trials} <= {"COMPLETE", "PRUNED"}
    assert searched.user_attrs["kdtune.search_ended"] is True
    parents, children = record(f"sqlite:///{tmp_path / 'mlflow.db'}", "halted")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["kdtune.trial_id"] for c in children) == sorted(by_id)


def test_a_search_interrupted_within_its_random_start_resumes_with_new_configurations(tmp_path):
    """Ctrl-C after 3 of 10 trials, inside TPE's 10 random start-up trials: the resumed sampler
    drew the same points again before (5 distinct configurations of 10)."""
    printed = interrupt_and_resume(tmp_path, trials=10, after=3, sig=signal.SIGINT)
    assert_one_uninterrupted_search(tmp_path, 10, printed)


def test_a_killed_search_resumes_with_every_printed_trial_as_it_was_printed(tmp_path):
    """SIGKILL of the whole process group after 8 of 16 trials: Tune saved its state up to 10 s
    late, so printed trials ran again (other values, another stop epoch) or were forgotten."""
    printed = interrupt_and_resume(tmp_path, trials=16, after=8, sig=signal.SIGKILL)
    assert_one_uninterrupted_search(tmp_path, 16, printed)
    # MO-ASHA's rungs cut short (a full disk, a hand): named before anything starts
    state = tmp_path / "ray" / "halted" / "scheduler_state.json"
    state.write_text(state.read_text()[:40])
    again = run([*search(tmp_path, 16), "--resume"], tmp_path)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert f"MO-ASHA's record of its rungs, {state}, is damaged" in again.stderr


def test_a_search_interrupted_while_it_replicates_its_front_resumes_without_a_seed_twice(
        tmp_path):  # fmt: skip
    """Ctrl-C once one trial beyond the 6 searched has ended, in the replicates' phase: the
    resumed search runs no seed of a configuration twice and loses none it had begun."""
    printed = interrupt_and_resume(tmp_path, trials=6, after=7, sig=signal.SIGINT)
    assert_one_uninterrupted_search(tmp_path, 6, printed)
    rows = pq.read_table(tmp_path / "ray" / "halted" / "results.parquet").to_pylist()
    assert any(r["seed"] != 0 for r in rows)
    assert {r["status"] for r in rows if r["seed"] != 0} == {"TERMINATED"}


def test_a_driver_killed_in_its_final_phase_leaves_the_parent_running_until_resume(tmp_path):
    """Killed while it writes the tables, figures and importance: the parent run stays RUNNING
    (not FINISHED over a half-written record) and --resume writes it all, then finishes it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = search(tmp_path, 6)
    first = start(command, tmp_path)
    assert first.stdout is not None
    for line in first.stdout:
        if line.startswith("All trials ("):  # the final phase has begun
            os.killpg(first.pid, signal.SIGKILL)
            break
    first.communicate(timeout=120)
    parents, _ = record(uri, "halted")
    assert [p.info.status for p in parents] == ["RUNNING"]
    resumed = run([*command, "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    parents, children = record(uri, "halted")
    rows = pq.read_table(tmp_path / "ray" / "halted" / "results.parquet").to_pylist()
    assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == len(rows)
    assert sum(r["seed"] == 0 for r in rows) == 6
    assert "Which hyperparameters mattered" in resumed.stdout


def test_a_study_started_again_without_resume_closes_the_run_a_dead_driver_left_open(tmp_path):
    """kill -9 mid-study, then the same command without --resume: the first parent run and its
    running trials once stayed RUNNING forever beside the new one."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [*search(tmp_path, 4), "--scheduler", "fifo"]
    first = start([*command, "--epochs", "400"], tmp_path)
    assert first.stdout is not None
    for line in first.stdout:
        if line.startswith("mlflow: parent run"):
            time.sleep(3)  # trials have begun
            os.killpg(first.pid, signal.SIGKILL)
            break
    first.communicate(timeout=120)
    again = run([*command, "--epochs", "2"], tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "was left running by a driver that died; marked it and" in again.stdout
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("halted").experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]


SAVED_STUDY = ROOT / "tests" / "data" / "saved_study_64f0812.tar.gz"


def test_a_study_saved_by_kdtune_before_runner_was_split_resumes(tmp_path):
    """The study folder of the default search (`temperature_sweep.py --smoke-test --name saved
    --num-samples 6 --epochs 9`), Ctrl-C'd after 3 trials by kdtune at commit 64f0812, before
    runner.py was split into rooms (issue #26): Tune pickled its state with the names of that
    code. Resumed from a folder it was not saved in, into a new MLflow store, it ends with its 6
    trials, each configuration once, every trial that had ended as it was saved."""
    with tarfile.open(SAVED_STUDY) as archive:
        archive.extractall(tmp_path / "ray", filter="data")
    folder = tmp_path / "ray" / "saved"
    ended = {r["trial_id"]: r for r in pq.read_table(folder / "results.parquet").to_pylist()
             if r["val_acc"] is not None}  # fmt: skip
    assert len(ended) == 3
    command = [sys.executable, str(ROOT / "studies" / "temperature_sweep.py"), "--smoke-test",
               "--name", "saved", "--num-samples", "6", "--epochs", "9", "--storage",
               str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--resume"]  # fmt: skip
    resumed = run(command, tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = pq.read_table(folder / "results.parquet").to_pylist()
    assert len(rows) == 6 and {r["status"] for r in rows} <= {"TERMINATED", "STOPPED"}
    assert len({tuple(r.get(k) for k in ("method", *SEARCHED)) for r in rows}) == 6
    by_id = {r["trial_id"]: r for r in rows}
    for trial_id, saved in ended.items():
        assert {k: by_id[trial_id][k] for k in ("val_acc", "val_ece", "stopped_at")} == {
            k: saved[k] for k in ("val_acc", "val_ece", "stopped_at")}
    parents, children = record(f"sqlite:///{tmp_path / 'mlflow.db'}", "saved")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["kdtune.trial_id"] for c in children) == sorted(by_id)
