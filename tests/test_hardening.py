"""Issue 17: nothing lost from the record, no hang, no traceback, no escape. Real study processes,
real signals, a real sqlite MLflow store, read back after each blow."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from tests.helpers.runs import ROOT, assert_complete, finished_trials, record, run, start, sweep


@pytest.mark.slow
def test_an_interrupted_study_says_so_and_resumes_into_the_store_it_is_given(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it): exit 130 with how to
    resume, the parent KILLED, unfinished rows marked. --resume given another --tracking-uri
    then records the whole study there and leaves the first store as it was."""
    first, second = f"sqlite:///{tmp_path / 'first.db'}", f"sqlite:///{tmp_path / 'second.db'}"
    process = start(sweep(tmp_path, "stopped", first, trials=3, epochs=30), tmp_path)
    finished = finished_trials(process, 1)
    os.killpg(process.pid, signal.SIGINT)
    output = process.communicate(timeout=180)[0]
    assert process.returncode == 130, output[-3000:]
    assert "run the same command with --resume" in output and "Traceback" not in output
    rows = pq.read_table(tmp_path / "ray" / "stopped" / "results.parquet").to_pylist()
    assert len({r["trial_id"] for r in rows}) == len(rows)
    assert {r["status"] for r in rows} <= {"TERMINATED", "UNFINISHED"}  # none passed off done
    done = [r for r in rows if r["status"] == "TERMINATED"]
    assert len(done) < 3 and "trials unfinished" in output
    assert set(finished) <= {r["trial_id"] for r in done}
    assert all(r["test_acc"] is not None for r in done), (done, output[-3000:])
    parents, children = record(first, "stopped")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert {c.info.status for c in children} <= {"FINISHED", "KILLED"}

    resumed = run([*sweep(tmp_path, "stopped", second, trials=3, epochs=30), "--resume"],
                  tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    parents_after, children_after = record(second, "stopped")
    assert [p.info.status for p in parents_after] == ["FINISHED"] and len(children_after) == 3
    for child in children_after:
        assert_complete(second, child, epochs=30)
    assert len(record(first, "stopped")[1]) == len(children)  # nothing more went there


def test_a_trial_running_at_ctrl_c_is_unfinished_in_its_row_and_run(ray_local, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    """Ctrl-C while the second of two trials runs (kdtune's real runner, in this process):
    Tune's clean-up marks that trial TERMINATED in memory, and its row said STOPPED (short of
    its budget: as if MO-ASHA had stopped it) and its MLflow run FINISHED. Both now say it did
    not end: UNFINISHED, KILLED."""
    import io
    import sys
    import threading

    from kdtune.config import StudyInterrupted
    from tests.helpers.paced import paced_trials

    class CtrlCAfterTheFirstTrial(io.StringIO):
        def write(self, text: str) -> int:
            if text.startswith("trial 1/2 "):  # the second trial starts at once
                threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", CtrlCAfterTheFirstTrial())
    with pytest.raises(StudyInterrupted, match="1 of 2 trials unfinished"):
        paced_trials(tmp_path, "ctrl_c", epoch_s=0.5, epochs=8, cpus_per_trial=2)
    rows = pq.read_table(tmp_path / "ray" / "ctrl_c" / "results.parquet").to_pylist()
    assert [(r["status"], r.get("stopped_at")) for r in rows] == [("TERMINATED", None),
                                                                  ("UNFINISHED", None)]
    assert rows[0]["epoch"] == 8 and 1 <= rows[1]["epoch"] < 8
    _, children = record(f"sqlite:///{tmp_path / 'mlflow.db'}", "ctrl_c")
    by_trial = {c.data.tags["kdtune.trial_id"]: c.info.status for c in children}
    assert by_trial == {rows[0]["trial_id"]: "FINISHED", rows[1]["trial_id"]: "KILLED"}


def test_sigterm_stops_a_study_as_ctrl_c_does():
    """A scheduler's or a closed session's SIGTERM becomes the SIGINT on which Tune saves its
    state and stops (the test above follows that path to the end)."""
    from kdtune.runner import _sigterm_stops_tune

    # Python's own Ctrl-C handler, as in a fresh driver: an in-process Tune run earlier in the
    # session may have left Tune's handler installed, which logs instead of raising.
    interrupt_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.getsignal(signal.SIGTERM)  # the default, or Ray's once ray.init has run
    try:
        with pytest.raises(KeyboardInterrupt), _sigterm_stops_tune():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        signal.signal(signal.SIGINT, interrupt_handler)
    assert signal.getsignal(signal.SIGTERM) is before  # restored on the way out


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_resume_completes_the_record(tmp_path):
    """The MLflow store on a 1 MB filesystem that fills up mid-study: the trials go on, the
    study ends with one line (exit 1), and once there is room --resume writes what the record
    lacked, every step once."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small filesystem here (needs root)")
    try:
        uri = f"sqlite:///{disk / 'mlflow.db'}"
        command = sweep(tmp_path, "full", uri, trials=4, epochs=25)
        first = run(command, tmp_path)
        assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-2000:]
        last = first.stderr.strip().splitlines()[-1]
        assert "disk is full" in last and "--resume" in last and "Traceback" not in first.stderr
        assert "the trials go on" in first.stdout and first.stdout.count("trial ") >= 4
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        resumed = run([*command, "--resume"], tmp_path)
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        parents, children = record(uri, "full")
        assert [p.info.status for p in parents] == ["FINISHED"] and len(children) == 4
        for child in children:
            assert_complete(uri, child, epochs=25)
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_tune_state_cut_short_is_named_instead_of_restarting_the_study(tmp_path, capsys):
    """A disk that filled up while Tune wrote its state leaves it cut short: Tune would start
    the study over; kdtune says so (or falls back to an older state that is whole)."""
    import studies.temperature_sweep as study

    folder = tmp_path / "ray" / "cut"
    folder.mkdir(parents=True)
    (folder / "experiment_state-2026-01-02_00-00-00.json").write_text('{"trial_data": [["ab')
    argv = ["--smoke-test", "--name", "cut", "--storage", str(tmp_path / "ray"), "--resume"]
    code, err = _main(study.main, argv, capsys)
    assert code == 2 and "experiment_state-2026-01-02_00-00-00.json is cut short" in err
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    from kdtune.storage import StudyStorage, check_tune_state

    said = []
    check_tune_state(StudyStorage.of(str(tmp_path / "ray"), "cut"), said.append)
    assert (folder / "experiment_state-2026-01-02_00-00-00.json.damaged").exists()
    assert said and "resuming from the state saved before it" in said[0]


def _main(main, argv: list[str], capsys) -> tuple[int, str]:
    """A command run in this process, as the shell would: its exit status and its stderr."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    return stopped.value.code, capsys.readouterr().err


def _broken_stores(tmp_path) -> list[tuple[str, str]]:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(os.urandom(4096))
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("create table invoices (id integer)")
    return [("http://127.0.0.1:9", "no MLflow server answers at http://127.0.0.1:9"),
            ("nosuch://store", "cannot use the MLflow store nosuch://store"),
            (f"sqlite:///{corrupt}", "is not an SQLite database"),
            (f"sqlite:///{foreign}", "is a database of something else (tables invoices)")]


def test_a_store_that_cannot_be_used_is_one_line_before_anything_starts(tmp_path, capsys,
                                                                         monkeypatch):  # fmt: skip
    import studies.temperature_sweep as study

    monkeypatch.chdir(tmp_path)
    for uri, message in _broken_stores(tmp_path):
        began = time.monotonic()
        code, err = _main(study.main, ["--smoke-test", "--tracking-uri", uri], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (uri, err)
        assert time.monotonic() - began < 30 and not (tmp_path / "ray_results").exists()
    assert sqlite3.connect(tmp_path / "foreign.db").execute(
        "select count(*) from sqlite_master").fetchone() == (1,)  # nothing was added to it


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (b"\xff\xfe not text", "not UTF-8 text"),
        (b"", "is empty"),
        (b'name = ".."', "name: use letters"),
        (b'name = "' + b"x" * 5_000_000 + b'"', "name: at most 100 characters, got 5000000"),
        (b'name = "' + b"?" * 5_000_000 + b'"', "(5000002 characters)"),
        (b"seed = -3", "seed: must be >= 0"),
        (b"cpus_per_trial = inf", "cpus_per_trial: must be a finite number"),
        (b"gpus_per_trial = nan", "gpus_per_trial: must be a finite number"),
        (b"report_interval_s = inf", "report_interval_s: must be a finite number"),
        (b"checkpoint_interval_s = nan", "checkpoint_interval_s: must be a finite number"),
        (b"max_failures = -1", "max_failures: must be >= 0"),
        (b'methods = ["kd", "kd"]', "methods: list each method once"),
        (b'objectives = [["val_acc", "max"], ["val_acc", "min"]]', "name each metric once"),
    ],
)
def test_bad_spec_files_are_one_short_line_before_anything_starts(spec, message, tmp_path,
                                                                  capsys, monkeypatch):  # fmt: skip
    from kdtune.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "spec.toml"
    path.write_bytes(spec)
    code, err = _main(main, ["run", str(path)], capsys)
    assert code == 2 and message in err and len(err) < 400, err[:1000]
    assert not (tmp_path / "ray_results").exists()


def test_kdtune_pareto_on_a_damaged_table_is_one_line(tmp_path, capsys):
    from kdtune.cli import main

    (tmp_path / "results.parquet").write_bytes(b"PAR1 not really")
    code, err = _main(main, ["pareto", str(tmp_path)], capsys)
    assert code == 2 and "cannot read" in err and "results.parquet" in err


def test_resume_refuses_a_study_folder_others_can_write(tmp_path, capsys):
    """--resume unpickles Tune's state from the study folder: one that group or others may
    write could hold code that would run as the user."""
    import studies.temperature_sweep as study

    folder = tmp_path / "ray" / "shared"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"whatever someone left here")
    folder.chmod(0o777)
    argv = ["--smoke-test", "--name", "shared", "--storage", str(tmp_path / "ray"), "--resume"]
    code, err = _main(study.main, argv, capsys)
    assert code == 2 and f"will not resume from {folder}:" in err and "chmod go-w" in err
    folder.chmod(0o755)
    (folder / "tuner.pkl").chmod(0o666)
    code, err = _main(study.main, argv, capsys)
    assert code == 2 and "tuner.pkl: group or others may write it" in err


def test_a_corrupt_teacher_checkpoint_is_named_before_ray_starts(tmp_path):
    """One line that names the file and says to delete it; never torch's advice to load it with
    weights_only=False; and Ray was not started."""
    import sys

    import studies.temperature_sweep as study
    from kdtune.data import load_digits
    from kdtune.teacher import recipe_key

    key = recipe_key(load_digits(seed=0), "cnn", study.SMOKE.teacher_recipe, 0)
    checkpoint = tmp_path / "ray" / "teachers" / f"cnn-digits-{key}.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"\x80\x04 this is not a checkpoint")
    out = subprocess.run([sys.executable, str(ROOT / "studies" / "temperature_sweep.py"),
                          "--smoke-test", "--storage", str(tmp_path / "ray")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and str(checkpoint) in out.stderr and "delete it" in out.stderr
    assert "weights_only" not in out.stderr and "Traceback" not in out.stderr
    assert "ray:" not in out.stdout  # the study stopped before starting Ray


def test_resources_this_machine_cannot_give_are_an_input_error(ray_local, tmp_path):
    """A trial that asks for more than Ray has would wait forever: one line instead, before the
    MLflow parent run is opened (here Ray runs in this process, as on a cluster: Ray says)."""
    import dataclasses

    import studies.temperature_sweep as study
    from kdtune.config import ConfigError
    from kdtune.study import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = dataclasses.replace(study.SMOKE, cpus_per_trial=64, storage_path=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="cpus_per_trial: a trial asks for 64 CPUs, but this "
                                          "machine has 2"):  # fmt: skip
        run_study(spec, tracking_uri=uri, log=lambda _: None)
    assert record(uri, spec.name)[0] == []


def test_resources_a_lone_machine_cannot_give_are_refused_before_data_teacher_or_ray(tmp_path):
    """Without a cluster, the machine's own CPUs and GPUs are counted before anything else:
    the refusal once came after the teacher was trained and Ray had started."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for flag, message in (("--cpus-per-trial", "cpus_per_trial: a trial asks for 64 CPUs"),
                          ("--gpus-per-trial", "gpus_per_trial: 64")):  # fmt: skip
        began = time.monotonic()
        done = run([*sweep(tmp_path, "greedy", uri), flag, "64"], tmp_path)
        assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
        assert len(done.stderr.strip().splitlines()) == 1 and done.stdout.strip() == ""
        assert time.monotonic() - began < 30
    assert not (tmp_path / "ray" / "teachers").exists()  # no teacher trained


@pytest.mark.slow
def test_trials_starved_of_resources_are_announced_with_what_they_wait_for(
    ray_local, tmp_path, monkeypatch, capsys
):
    """On an autoscaling cluster a trial may wait for nodes: while none runs and some wait, the
    callback says so at a steady cadence, with what each asks and for how long; while one runs,
    nothing is starved. A real study: an actor holds both of Ray's CPUs until Tune's trials have
    waited a while, then lets go, as a node that comes up; each trial asks both CPUs, so the
    second waits while the first runs."""
    import re
    import threading

    from ray.util.placement_group import placement_group_table

    from kdtune import callback
    from tests.helpers.paced import paced_trials

    monkeypatch.setattr(callback, "WAIT_NOTICE_S", 1.5)
    monkeypatch.setattr(callback, "PROGRESS_S", 0.5)

    class Hog:
        def ready(self) -> bool:
            return True

    hog = ray_local.remote(num_cpus=2)(Hog).remote()
    ray_local.get(hog.ready.remote())

    def node_comes_up() -> None:
        deadline = time.monotonic() + 120
        try:  # once Tune's trials wait for their resources, let them wait 4 s
            while time.monotonic() < deadline and not any(
                pg["state"] == "PENDING" for pg in placement_group_table().values()
            ):
                time.sleep(0.1)
            time.sleep(4.0)
        finally:
            ray_local.kill(hog)

    threading.Thread(target=node_comes_up, daemon=True).start()
    paced_trials(tmp_path, "starved", epoch_s=1.0, cpus_per_trial=2)
    out = capsys.readouterr().out
    notices = [line for line in out.splitlines() if line.startswith("ray: ")]
    notice = (r"ray: 2 trials have waited \d+ min for resources; each asks \{'CPU': 2\.0\} "
              r"\(Ctrl-C stops the study\)")  # fmt: skip
    assert notices and all(re.fullmatch(notice, line) for line in notices), out
    running = re.search(r"^progress: 0/2 trials done, 1 running, 1 to come", out, re.M)
    assert running, out  # the first trial ran while the second waited ...
    assert out.rindex("ray: ") < running.start()  # ... and that said nothing of starving
    assert "trial 2/2 " in out


def test_resume_from_another_working_folder_stays_in_the_studys_store(ray_local, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    """The default store is mlflow.db in the working folder: resuming elsewhere (no
    --tracking-uri) keeps recording in the store the study began in, not a new one there."""
    import dataclasses

    import studies.temperature_sweep as study
    from kdtune.study import run_study

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir(), elsewhere.mkdir()
    spec = dataclasses.replace(study.SMOKE, name="moved", storage_path=str(tmp_path / "ray"))
    monkeypatch.chdir(first)
    started = run_study(spec, log=lambda _: None)
    monkeypatch.chdir(elsewhere)
    resumed = run_study(spec, resume=True, log=lambda _: None)
    assert resumed.tracking_uri == started.tracking_uri == f"sqlite:///{first / 'mlflow.db'}"
    assert resumed.parent_run_id == started.parent_run_id
    assert not (elsewhere / "mlflow.db").exists()
    parents, children = record(started.tracking_uri, "moved")
    assert len(parents) == 1 and len(children) == resumed.table.num_rows > spec.num_samples


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_resume_refuses_a_study_folder_with_a_file_of_another_user(tmp_path, capsys):
    import studies.temperature_sweep as study

    folder = tmp_path / "ray" / "theirs"
    folder.mkdir(parents=True)
    planted = folder / "searcher-state-2026-01-01_00-00-00.pkl"
    planted.write_bytes(b"someone else's pickle")
    os.chown(planted, 65534, 65534)
    argv = ["--smoke-test", "--name", "theirs", "--storage", str(tmp_path / "ray"), "--resume"]
    code, err = _main(study.main, argv, capsys)
    assert code == 2 and f"{planted}: another user owns it" in err
