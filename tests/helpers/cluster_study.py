"""Run the smoke study on a 2-node Ray cluster on this machine and kill its GPU node mid-study.

Usage: cluster_study.py STORAGE_URI TRACKING_URI. Prints one JSON line with what happened; the
test asserts on it. A separate process, because a test session's Ray cannot host a Cluster.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from pathlib import Path

# isort: off
import kdtune  # noqa: F401  (before Ray: keeps this one-machine cluster on 127.0.0.1)
import ray
from ray.cluster_utils import Cluster

# isort: on

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import studies.temperature_sweep as study  # noqa: E402
from kdtune.config import Recipe  # noqa: E402
from kdtune.study import run_study  # noqa: E402


def trial_reports(study_dir: Path) -> dict[str, list[dict]]:
    reports = {}
    for path in study_dir.glob("tune_trainable_*/result.json"):
        reports[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines()]
    return reports


def main() -> None:
    storage_uri, tracking_uri = sys.argv[1], sys.argv[2]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    spec = dataclasses.replace(
        study.SMOKE, name="cluster", methods=("kd",), num_samples=3, max_concurrent_trials=2,
        front_seeds=1,
        scheduler="fifo",
        gpus_per_trial=0.5, cpus_per_trial=1, max_failures=3, recipe=Recipe(epochs=60),
        checkpoint_interval_s=0,
        storage_path=storage_uri,
    )  # fmt: skip
    study_dir = Path(storage_uri.removeprefix("file://")) / spec.name
    outcome: dict = {}
    # The study runs in a thread: Ray adds nodes only from the main thread, which kills one.
    runner = threading.Thread(target=lambda: outcome.update(result=run_study(
        spec, tracking_uri=tracking_uri, log=lambda _: None)))  # fmt: skip
    runner.start()
    event: dict = {}
    while not event and runner.is_alive():
        for reports in trial_reports(study_dir).values():
            if reports and 10 <= reports[-1]["epoch"] < 50:
                event["killed_node"] = gpu_node.node_id
                cluster.remove_node(gpu_node)
                event["new_node"] = cluster.add_node(num_cpus=2, num_gpus=1).node_id
                break
        time.sleep(0.05)
    runner.join()
    result = outcome["result"]
    print(json.dumps({
        "head_node": cluster.head_node.node_id,
        **event,
        "parent_run_id": result.parent_run_id,
        "rows": result.table.select(["trial_id", "status", "epoch", "node_id"]).to_pylist(),
        "reports": {name: [(r["epoch"], r["node_id"]) for r in reports]
                    for name, reports in trial_reports(study_dir).items()},
        "published": sorted(p.name for p in study_dir.glob("*.parquet")),
    }))  # fmt: skip
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main()
