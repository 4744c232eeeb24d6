"""Issue 5, tested on one machine: a 2-node Ray cluster with a (logical) GPU node, a real
`mlflow server` on 127.0.0.1, storage given as a URI, and the GPU node killed mid-study."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _api(base: str, endpoint: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=data,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "artifacts")]  # fmt: skip
    server = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health within 2 minutes")
        yield base
    finally:
        os.killpg(server.pid, 9)


def test_study_on_a_two_node_cluster_survives_losing_its_gpu_node(mlflow_server, tmp_path):
    storage = f"file://{tmp_path / 'shared'}"
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "helpers" / "cluster_study.py"),
                          storage, mlflow_server], capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    run = json.loads(out.stdout.strip().splitlines()[-1])

    # every trial finished, on a GPU node, never on the CPU-only head
    assert {r["status"] for r in run["rows"]} == {"TERMINATED"} and len(run["rows"]) == 3
    assert all(r["epoch"] == 60 for r in run["rows"])
    gpu_nodes = {run["killed_node"], run["new_node"]}
    reports = run["reports"]
    assert all(node in gpu_nodes for trial in reports.values() for _, node in trial)
    # a trial cut off on the killed node went on from its checkpoint on the new node
    moved = [t for t in reports.values() if {n for _, n in t} == gpu_nodes]
    assert moved
    for trial in moved:
        first_on_new = next(epoch for epoch, node in trial if node == run["new_node"])
        assert first_on_new > 1
    # kdtune's outputs were published next to Tune's files at the storage URI
    assert run["published"] == ["pareto.parquet", "results.parquet"]

    # the server holds the parent run and one finished child run per trial
    experiment = _api(mlflow_server, "experiments/get-by-name?experiment_name=cluster")
    search = {"experiment_ids": [experiment["experiment"]["experiment_id"]], "max_results": 100}
    found = _api(mlflow_server, "runs/search", search)
    runs = found["runs"]
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
    children = [(r, t) for r, t in zip(runs, tags) if "kdtune.trial_id" in t]
    parents = [r for r, t in zip(runs, tags) if "kdtune.trial_id" not in t]
    assert [p["info"]["run_id"] for p in parents] == [run["parent_run_id"]]
    assert sorted(t["kdtune.trial_id"] for _, t in children) == sorted(
        r["trial_id"] for r in run["rows"]
    )
    assert all(r["info"]["status"] == "FINISHED" for r, _ in children)
    assert all(t["mlflow.parentRunId"] == run["parent_run_id"] for _, t in children)
