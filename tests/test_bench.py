"""Every benchmark's --quick run (what CI runs): it finishes, prints its headline ratio and
writes a JSON record with the device. Timings are not asserted: they are measurements."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "module, flags, name",
    [(name, [], name) for name in ("step_throughput", "overhead", "scaling", "epoch_floor",
                                   "packing", "importance", "samplers", "search_efficiency",
                                   "concurrency", "driver_scale", "front_seeds")]
    + [("search_efficiency", ["--blackbox"], "search_efficiency_blackbox")],
)
def test_quick_benchmark_runs_and_records_its_ratio(module, flags, name, tmp_path):
    env = {**os.environ, "KDTUNE_BENCH_RESULTS": str(tmp_path)}
    full = tmp_path / f"{name}-cpu.json"  # a full run's record, which a quick one must not touch
    full.write_text('{"benchmark": "the full run"}\n')
    out = subprocess.run([sys.executable, "-m", f"bench.{module}", "--quick", *flags], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert re.search(r"= \d+\.\d\dx", out.stdout)
    record = json.loads((tmp_path / f"{name}-cpu-quick.json").read_text())
    assert record["benchmark"] == name and record["device"] and record["ratio"] > 0
    assert record["quick"] is True
    assert full.read_text() == '{"benchmark": "the full run"}\n'
