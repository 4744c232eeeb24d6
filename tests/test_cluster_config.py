"""cluster.yaml (and the on-premises variant) checked offline with Ray's own validator."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


def _validated(name: str) -> dict:
    config = prepare_config(yaml.safe_load((ROOT / name).read_text()))
    validate_config(config)  # Ray's schema, head type and worker counts
    return config


def test_aws_cluster_has_a_trial_free_head_and_autoscaling_gpu_workers():
    config = _validated("cluster.yaml")
    assert config["provider"]["type"] == "aws"
    nodes = config["available_node_types"]
    head = nodes[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert workers and all(n["resources"].get("GPU", 0) >= 1 for n in workers)
    assert all(n["min_workers"] == 0 and n["max_workers"] >= 1 for n in workers)
    assert config["idle_timeout_minutes"] > 0
    assert "ray-ml" not in config["docker"]["image"]


@pytest.mark.parametrize("name", ["cluster.yaml", "docs/cluster-local.yaml"])
def test_cluster_installs_kdtune_and_exposes_nothing_publicly(name):
    config = _validated(name)
    commands = " ".join(config["setup_commands"] + config["head_start_ray_commands"])
    assert "pip install" in commands and "kdtune" in commands
    assert "--dashboard-host=127.0.0.1" in commands
    mlflow = [c for c in config["head_start_ray_commands"] if "mlflow server" in c and "nohup" in c]
    assert len(mlflow) == 1 and "--host 127.0.0.1" in mlflow[0] and "sqlite:" in mlflow[0]
    assert "0.0.0.0" not in (ROOT / name).read_text()
