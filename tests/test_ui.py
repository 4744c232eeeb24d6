"""Issue 27: `kdtune ui` (and `kdtune dashboard`) through the real command. Bad input is exit
status 2 and one line naming the flag, before any server starts; a good store is said to be
served once it answers; and however the command ends, none of its processes is left."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
# this checkout's kdtune, whatever the venv has installed; the store only from the flags
ENV = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
       "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kdtune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdtune.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def processes_naming(port: int) -> list[psutil.Process]:
    """Processes given `--port PORT` (an MLflow, uvicorn or dashboard left running)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        pairs = set(zip(cmdline, cmdline[1:]))
        if ("--port", str(port)) in pairs and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def assert_one_line(out: subprocess.CompletedProcess, start: str, port: int) -> None:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"kdtune: error: {start}"), out.stderr
    assert "serving" not in out.stdout
    assert processes_naming(port) == []


def test_a_port_in_use_is_one_line_and_nothing_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        out = kdtune("ui", "--port", str(port), cwd=tmp_path)
        assert_one_line(out, f"port: {port} on 127.0.0.1 is in use", port)
        assert time.monotonic() - began < 30
    assert list(tmp_path.iterdir()) == []  # no store made


def test_a_port_out_of_range_is_one_line(tmp_path):
    out = kdtune("ui", "--port", "70000", cwd=tmp_path)
    assert_one_line(out, "port: 70000 is not a TCP port; give one in 1-65535", 70000)


def test_no_worker_is_one_line(tmp_path):
    port = free_port()
    out = kdtune("ui", "--port", str(port), "--workers", "0", cwd=tmp_path)
    assert_one_line(out, "workers: 0 worker processes cannot serve; give --workers 1 or more", port)


def test_an_unknown_tracking_uri_scheme_is_one_line(tmp_path):
    port = free_port()
    out = kdtune("ui", "--port", str(port), "--tracking-uri", "bogus://x", cwd=tmp_path)
    assert_one_line(out, "tracking_uri: cannot use the MLflow store bogus://x", port)


@pytest.mark.parametrize("given", ["sqlite:///{folder}/nope/mlflow.db", "sqlite:///{folder}/x.db",
                                   "{folder}/mlruns", "file://{folder}/mlruns", "default"])
def test_a_store_that_does_not_exist_is_named_not_created(tmp_path, given):
    """MLflow would create it empty and show nothing; kdtune says there is no store there and
    where studies keep theirs."""
    port = free_port()
    uri = given.format(folder=tmp_path)
    flags = [] if given == "default" else ["--tracking-uri", uri]
    out = kdtune("ui", "--port", str(port), *flags, cwd=tmp_path)
    missing = tmp_path / "mlflow.db" if given == "default" else Path(
        uri.removeprefix("sqlite:///").removeprefix("file://"))
    assert_one_line(out, f"tracking_uri: no MLflow store at {missing}", port)
    assert "(its last printed line names it; by default mlflow.db" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_dashboard_checks_its_port_as_ui_does(tmp_path):
    (tmp_path / "optuna.db").touch()
    out = kdtune("dashboard", str(tmp_path), "--port", "0", cwd=tmp_path)
    assert_one_line(out, "port: 0 is not a TCP port", 0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = kdtune("dashboard", str(tmp_path), "--port", str(port), cwd=tmp_path)
        assert_one_line(out, f"port: {port} on 127.0.0.1 is in use", port)


def test_mlflow_dying_before_it_answers_is_one_line_with_its_last_words(tmp_path, capsys):
    from kdtune.cli import _wait_until_serving

    log = tmp_path / "mlflow.log"
    with log.open("w") as handle:
        server = subprocess.Popen([sys.executable, "-c", "print('OSError: no good'); exit(3)"],
                                  stdout=handle)  # fmt: skip
    with pytest.raises(SystemExit) as ended:
        _wait_until_serving(server, f"http://127.0.0.1:{free_port()}", str(log))
    assert ended.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "kdtune: error: MLflow's UI ended (exit status 3) before it answered on http://127.0.0.1:")
    assert lines[0].endswith(f": OSError: no good (MLflow's log: {log})")


def _lines(stream) -> queue.Queue:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ui_says_serving_once_it_answers_and_stops_whole(tmp_path, stop):
    from kdtune.tracking import StudyTracker, view_link

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = StudyTracker("shown", uri).experiment_id
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "kdtune.cli", "ui", "--port", str(port),
                           "--tracking-uri", uri], cwd=tmp_path, env=ENV, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    started: list[psutil.Process] = []
    try:
        said = _lines(ui.stdout)
        line = said.get(timeout=240)
        assert line.startswith(f"kdtune: serving {uri} on http://127.0.0.1:{port}"), line
        # a link per study, opening on its runs (the experiment list opens MLflow's GenAI
        # overview); the link is the one the study's description gives
        assert said.get(timeout=10).strip() == "its studies' trials:"
        assert said.get(timeout=10).split() == [
            "shown", f"http://127.0.0.1:{port}/{view_link(experiment)}"]
        with DIRECT.open(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
            assert answer.status == 200
        get = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=shown"
        with DIRECT.open(get, timeout=30) as answer:
            assert f'"experiment_id": "{experiment}"' in answer.read().decode()
        started = psutil.Process(ui.pid).children(recursive=True)
        assert started and processes_naming(port)
        # MLflow's UI and its one uvicorn worker; not 4 workers and MLflow's GenAI job runner
        # (16 processes, 3.1 GiB)
        assert len(started) == 2, [" ".join(p.cmdline()[:4]) for p in started]
        listening = {c.laddr.ip for p in started for c in p.net_connections("inet")
                     if c.status == psutil.CONN_LISTEN}  # fmt: skip
        assert listening == {"127.0.0.1"}  # nothing listens beyond loopback unless asked
        ui.send_signal(stop)
        assert ui.wait(timeout=30) == 0, ui.stderr.read()
    finally:
        if ui.poll() is None:
            ui.kill()
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert processes_naming(port) == []
    with socket.socket() as again:  # free for the next server (closed connections may linger)
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_dashboard_serves_a_studys_optuna_record_from_the_default_install(tmp_path):
    """optuna-dashboard comes with kdtune: `kdtune dashboard FOLDER` serves the folder's Optuna
    study (its trials and the user attributes that link it to MLflow) on loopback only."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="shown", storage=storage,
                                directions=["maximize", "minimize"])  # fmt: skip
    study.set_user_attr("mlflow_parent_run_id", "abc")
    study.add_trial(optuna.trial.create_trial(values=[0.9, 0.1], params={"x": 1.0},
                    distributions={"x": optuna.distributions.FloatDistribution(0, 2)}))
    port = free_port()
    dashboard = subprocess.Popen([sys.executable, "-m", "kdtune.cli", "dashboard", str(tmp_path),
                                  "--port", str(port)], cwd=tmp_path, env=ENV, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline, studies = time.monotonic() + 240, ""
        while time.monotonic() < deadline and '"shown"' not in studies:
            try:
                with DIRECT.open(f"http://127.0.0.1:{port}/api/studies", timeout=5) as answer:
                    studies = answer.read().decode()
            except OSError:
                time.sleep(1)
        found = [st for st in json.loads(studies)["study_summaries"]
                 if st["study_name"] == "shown"]
        assert len(found) == 1, studies
        server = psutil.Process(dashboard.pid)
        listening = {c.laddr.ip for p in [server, *server.children(recursive=True)]
                     for c in p.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        detail_url = f"http://127.0.0.1:{port}/api/studies/{found[0]['study_id']}"
        with DIRECT.open(detail_url, timeout=30) as answer:
            detail = answer.read().decode()
        shown = json.loads(detail)
        assert {"key": "mlflow_parent_run_id", "value": "abc"} in shown["user_attrs"]
        assert [t["values"] for t in shown["trials"]] == [[0.9, 0.1]]
    finally:
        dashboard.send_signal(signal.SIGINT)
        try:
            dashboard.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dashboard.kill()
    assert processes_naming(port) == []


def test_ui_lists_each_studys_runs_link_and_counts_the_rest(tmp_path):
    """What `kdtune ui` prints under its serving line, from a real store: a runs link per kdtune
    study (the most recently changed first, at most 10), the rest counted; none yet is said."""
    from kdtune.cli import studies_lines
    from kdtune.tracking import StudyTracker, open_client, view_link

    uri, url = f"sqlite:///{tmp_path / 'mlflow.db'}", "http://127.0.0.1:5001"
    open_client(uri).create_experiment("not kdtune's")
    assert studies_lines(uri, url) == (f"open {url}/#/experiments?workflowType=machine_learning "
                                       "(no kdtune study in this store yet)")  # fmt: skip
    made = {f"study{i:02}": StudyTracker(f"study{i:02}", uri).experiment_id for i in range(12)}
    lines = studies_lines(uri, url).splitlines()
    assert lines[0] == "its studies' trials:" and len(lines) == 12
    listed = dict(line.split() for line in lines[1:11])
    assert len(listed) == 10 and all(listed[n] == f"{url}/{view_link(made[n])}" for n in listed)
    assert lines[11] == f"  and 2 more: {url}/#/experiments?workflowType=machine_learning"
