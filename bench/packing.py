"""Trials packed on one GPU: aggregate KD training images/s with 1, 2, 4 and 8 concurrent trials.

Each trial is a Ray task holding 1/k of the GPU, as `--gpus-per-trial 1/k` gives a Tune trial,
and trains a resnet8x4 student against a resnet32x4 teacher with `engine.fit` (Hinton KD) on
synthetic CIFAR-100-shaped data. The k trials warm up (CUDA context, cuDNN autotuning), meet at
a barrier, then train the same epochs; the aggregate rate is all their images over the time
from the first start to the last end. Prints the table and `k trials / 1 trial = X.XXx` for the
largest k (the goal for 4 trials: >= 2.5x); writes bench/results/.
"""

from __future__ import annotations

import argparse
import time

import ray
import torch

from bench.common import synthetic_cifar, table, warm_up_split, write_result
from kdtune.config import Recipe
from kdtune.data import DatasetBundle
from kdtune.engine import fit, frozen, resolve_device
from kdtune.methods import METHODS
from kdtune.models import build_model


@ray.remote(num_cpus=0)
class Barrier:
    def __init__(self, parties: int) -> None:
        self.parties, self.arrived = parties, 0

    def arrive(self) -> None:
        self.arrived += 1

    def open(self) -> bool:
        return self.arrived >= self.parties


def packed_trial(
    data: DatasetBundle, teacher_name: str, student_name: str, epochs: int, threads: int,
    barrier: ray.actor.ActorHandle,
) -> tuple[float, float, int]:  # fmt: skip
    """(start, end, images) of one trial's timed epochs, on the wall clock shared by the node."""
    torch.set_num_threads(threads)
    device = resolve_device("auto")
    data = data.to(device)
    torch.manual_seed(0)
    teacher = frozen(build_model(teacher_name, data.num_classes, data.in_shape).to(device))
    student = build_model(student_name, data.num_classes, data.in_shape).to(device)
    method = METHODS["kd"]

    def train(data: DatasetBundle, epochs: int) -> None:
        fit(student, data, method, method.defaults, Recipe(epochs=epochs), teacher=teacher)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    train(warm_up_split(data), 1)
    ray.get(barrier.arrive.remote())
    while not ray.get(barrier.open.remote()):
        time.sleep(0.01)
    start = time.time()
    train(data, epochs)
    return start, time.time(), epochs * (len(data.train) // 64 * 64)


def aggregate_rate(
    concurrent: int, data_ref: ray.ObjectRef, args: argparse.Namespace, gpu: bool
) -> dict[str, float]:  # fmt: skip
    barrier = Barrier.remote(concurrent)
    task = ray.remote(packed_trial).options(
        num_cpus=args.cpus_per_trial, num_gpus=1 / concurrent if gpu else 0
    )
    trial_args = (data_ref, args.teacher, args.student, args.epochs, args.cpus_per_trial, barrier)
    runs = ray.get([task.remote(*trial_args) for _ in range(concurrent)])
    first, last = min(r[0] for r in runs), max(r[1] for r in runs)
    images = sum(r[2] for r in runs)
    return {"images_per_s": images / (last - first), "wall_s": last - first}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="CPU-sized: 1 and 2 trials of resnet20 -> resnet8x4")
    add("--concurrency", default="1,2,4,8", help="comma-separated trials per GPU")
    add("--teacher", default="resnet32x4")
    add("--student", default="resnet8x4")
    add("--images", type=int, default=10000, help="synthetic training images per trial")
    add("--epochs", type=int, default=2, help="timed epochs per trial")
    add("--cpus-per-trial", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.teacher, args.images, args.epochs = "1,2", "resnet20", 320, 1
    levels = [int(k) for k in args.concurrency.split(",")]
    # a Ray of its own: a running or stale cluster on this machine must not be measured
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    gpu = ray.cluster_resources().get("GPU", 0) > 0
    device = torch.device("cuda" if gpu else "cpu")
    data = synthetic_cifar(args.images)
    data_ref = ray.put(data)
    rates = {k: aggregate_rate(k, data_ref, args, gpu) for k in levels}
    ray.shutdown()
    single = rates[levels[0]]["images_per_s"]
    rows = [("trials at once", "aggregate images/s", "vs 1 trial")]
    rows += [(str(k), f"{r['images_per_s']:.1f}", f"{r['images_per_s'] / single:.2f}x")
             for k, r in rates.items()]  # fmt: skip
    print(table(rows))
    top = levels[-1]
    ratio = rates[top]["images_per_s"] / single
    print(f"{args.teacher} -> {args.student} on {'one GPU' if gpu else 'CPU'}: "
          f"{top} trials / {levels[0]} trial = {ratio:.2f}x")  # fmt: skip
    payload = {
        "teacher": args.teacher,
        "student": args.student,
        "images_per_trial": len(data.train),
        "epochs": args.epochs,
        "cpus_per_trial": args.cpus_per_trial,
        "rates": {str(k): r for k, r in rates.items()},
        "ratio": ratio,
    }
    print(f"wrote {write_result('packing', device, payload, quick=args.quick)}")
    return payload


if __name__ == "__main__":
    main()
