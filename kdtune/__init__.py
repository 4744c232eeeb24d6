"""kdtune: hyperparameter studies for knowledge distillation on Ray Tune, Optuna and MLflow."""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"


def cluster_in_sight() -> bool:
    """A Ray cluster is in sight: RAY_ADDRESS is set, or `ray start` ran on this machine (it
    leaves /tmp/ray/ray_current_cluster)."""
    return bool(os.environ.get("RAY_ADDRESS")) or Path("/tmp/ray/ray_current_cluster").exists()


def _keep_local_ray_on_loopback() -> None:
    """A Ray started here for a single machine binds its servers to 127.0.0.1 only.

    Ray picks loopback addresses only when it believes clusters are off, and it reads that switch
    once, when it is imported; so it is set here, before any Ray import, and only when no cluster
    is in sight (no RAY_ADDRESS, no `ray start` on this machine).
    """
    if cluster_in_sight():
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


_keep_local_ray_on_loopback()
