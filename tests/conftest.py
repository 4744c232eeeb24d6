from __future__ import annotations

import os
import tempfile

import pytest

import kdtune  # noqa: F401  (imported before Ray: keeps a local Ray on 127.0.0.1)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, in its own short temp dir (Unix socket paths are short).
    Its workers' and raylet's logs stay in that dir, as kdtune's own ray.init keeps them: a
    raylet line (a disk over 95% full) printed into a test's captured stderr broke a one-line
    error check in CI."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="kdt_ray_", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits():
    from kdtune.data import load_digits

    return load_digits(seed=0)
