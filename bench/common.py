"""Shared by the benchmarks: device description, result files, the headline line."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from kdtune.data import DatasetBundle, Split, load_synthetic

# KDTUNE_BENCH_RESULTS redirects the files (the tests do, to keep bench/results/ as measured)
RESULTS = Path(os.environ.get("KDTUNE_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_result(name: str, device: torch.device, payload: dict[str, Any], *, quick: bool,
                 folder: Path = RESULTS) -> Path:  # fmt: skip
    """bench/results/NAME-{cpu|gpu}.json (or in `folder`), with the device and the time of the
    run; a --quick run's goes to NAME-{cpu|gpu}-quick.json, so that a quick check never
    replaces the full run's measured record."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / result_name(name, device, quick)
    record = {
        "benchmark": name,
        "quick": quick,
        "device": device_name(device),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **payload,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def result_name(name: str, device: torch.device, quick: bool) -> str:
    return f"{name}-{'gpu' if device.type == 'cuda' else 'cpu'}{'-quick' if quick else ''}.json"


def figure_path(name: str, device: torch.device, quick: bool) -> Path:
    """The figure beside write_result's record: NAME-{cpu|gpu}[-quick].png."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return RESULTS / result_name(name, device, quick).replace(".json", ".png")


def finite_or_none(value: float) -> float | None:
    """JSON has no infinity: None for "never reached"."""
    return value if math.isfinite(value) else None


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def synthetic_cifar(images: int) -> DatasetBundle:
    """Random CIFAR-100-shaped data with `images` training images (CPU)."""
    # the splits are stratified over 100 classes, hence the minimum size; 80% of it is train
    return warm_up_split(load_synthetic(seed=0, size=max(2000, int(images / 0.8))), images)


def warm_up_split(data: DatasetBundle, images: int = 128) -> DatasetBundle:
    """The first images of the training split: enough steps for kernel selection, allocator
    growth and compilation before the clock starts."""
    return dataclasses.replace(data, train=Split(data.train.x[:images], data.train.y[:images]))
