"""The one format of kdtune's Tune results, written by both trainables and read by the driver
(the tracking callback, the searcher, MO-ASHA, the results table).

A trial's epochs travel packed: each Tune result carries every epoch since the last one sent as
one JSON string (REPORTS), beside `epoch` and the node it ran on. This module imports neither
MLflow nor torch, so that what only reads a result does not load them.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Every epoch a Tune result carries, as one JSON list (the last is the result's own epoch), so
# that Tune sees only `epoch` and its own keys: Tune keeps statistics of every number a result
# holds (~35 KB a trial with kdtune's ~50 metrics) and writes them all into every snapshot of
# the experiment, which at 1,000 trials made each snapshot take seconds (bench.driver_scale).
REPORTS = "reports"
EPOCH_HISTORY = "epoch_history"  # a result of kdtune before REPORTS: its earlier epochs only


def expand(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The epochs a Tune result carries, in order, the last with Tune's own keys (`pid`,
    `time_total_s`, ...): kdtune's trainables send them packed (REPORTS); a result of an older
    kdtune carries its earlier epochs (EPOCH_HISTORY) and the last at top level; any other
    result (the self-distillation study's) is one report."""
    rest = {k: v for k, v in result.items() if k not in (REPORTS, EPOCH_HISTORY)}
    if REPORTS in result:
        *earlier, last = json.loads(result[REPORTS])
        return [*earlier, {**rest, **last}]
    return [*json.loads(result.get(EPOCH_HISTORY) or "[]"), rest]


def last_report(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """The latest epoch a Tune result (a trial's `last_result`) holds; {} for none."""
    return expand(result)[-1] if result else {}


def tune_reporter(report_epochs: frozenset[int], report_interval_s: float,
                  save_state: Callable[[dict[str, Any], Path], None],
                  ) -> Callable[[dict[str, Any], dict[str, Any] | None], None]:  # fmt: skip
    """`report(result, state)` for a Tune trainable: each result tagged with the node it ran
    on; results held and sent in batches (REPORTS) at most every `report_interval_s` (the
    driver logs each epoch of a batch to MLflow at its own step), except at `report_epochs`
    (where the scheduler judges trials) and with a checkpoint (`state`, written by
    `save_state` into the checkpoint's folder), which go at once."""
    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()
    held: list[dict[str, Any]] = []  # epochs not sent yet
    sent = [time.monotonic()]

    def report(result: dict[str, Any], state: dict[str, Any] | None) -> None:
        result = {**result, "node_id": node_id}  # where it ran: a cluster is audited by node
        waiting = result.get("epoch") not in report_epochs
        if state is None and waiting and time.monotonic() - sent[0] < report_interval_s:
            held.append(result)
            return
        # epoch and node beside the pack: Tune's result.json still says where each ran
        packed = {"epoch": result.get("epoch"), "node_id": node_id,
                  REPORTS: json.dumps([*held, result])}  # fmt: skip
        held.clear()
        sent[0] = time.monotonic()
        if state is None:
            tune.report(packed)
            return
        with tempfile.TemporaryDirectory() as folder:
            save_state(state, Path(folder))
            tune.report(packed, checkpoint=tune.Checkpoint.from_directory(folder))

    return report
