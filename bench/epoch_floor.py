"""One CIFAR-100-sized epoch of resnet32x4 -> resnet8x4 KD against its FLOP floor.

The floor is the epoch's arithmetic at the machine's measured matmul peak: FLOPs per training
image are counted by `torch.utils.flop_counter` on one KD step (teacher forward, student
forward and backward; about 3.2 GFLOP per image for this pair, 161 TFLOP per 50,000-image
epoch), the peak is a large square matmul in the training's precision (bf16 on CUDA, fp32 on
CPU). The epoch is `engine.fit` on synthetic CIFAR-shaped data, timed after a short warm-up.
Prints the table and `epoch / floor = X.XXx` (1.00x would be every FLOP at matmul peak); the
fraction of peak is its inverse. Writes bench/results/.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import synthetic_cifar, table, warm_up_split, write_result
from kdtune.config import Recipe
from kdtune.data import DatasetBundle
from kdtune.engine import fit, frozen, resolve_device
from kdtune.losses import ce, kd
from kdtune.methods import METHODS
from kdtune.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, size: int, repeats: int = 10) -> float:
    """FLOP/s of a size x size matmul in the precision training runs in: the best of `repeats`
    timed products, as a peak is the rate the machine reaches, not its average under noise."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up: kernel selection, allocation
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def flops_per_image(teacher_name: str, student_name: str, num_classes: int) -> float:
    """Counted on CPU (FLOPs do not depend on the device) for a batch of 8."""
    teacher = build_model(teacher_name, num_classes, (3, 32, 32)).eval()
    student = build_model(student_name, num_classes, (3, 32, 32))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, num_classes, (8,))
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            t = teacher(x)
        s = student(x)
        (0.1 * ce(s, t, y) + 0.9 * kd(s, t, y, temperature=4.0)).backward()
    return counter.get_total_flops() / len(x)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="CPU-sized: a 320-image epoch, 2,048-wide matmul (CI)")
    add("--teacher", default="resnet32x4")
    add("--student", default="resnet8x4")
    add("--images", type=int, default=50000, help="training images per epoch (50,000: CIFAR)")
    add("--batch-size", type=int, default=64)
    add("--matmul-size", type=int, default=8192)
    add("--compile", action="store_true", help="torch.compile both networks")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.matmul_size = 320, 2048
    device = resolve_device("auto")
    data = synthetic_cifar(args.images).to(device)
    torch.manual_seed(0)
    teacher = build_model(args.teacher, data.num_classes, data.in_shape).to(device)
    student = build_model(args.student, data.num_classes, data.in_shape).to(device)
    teacher_fn = frozen(teacher, args.compile)
    recipe = Recipe(epochs=1, batch_size=args.batch_size, lr=0.05, compile=args.compile)
    method = METHODS["kd"]

    def epoch_seconds(data: DatasetBundle) -> float:
        _sync(device)
        start = time.perf_counter()
        fit(student, data, method, method.defaults, recipe, teacher=teacher_fn)
        _sync(device)
        return time.perf_counter() - start

    warmup_s = epoch_seconds(warm_up_split(data))  # cuDNN autotuning, allocator, compilation
    epoch_s = epoch_seconds(data)
    per_image = flops_per_image(args.teacher, args.student, data.num_classes)
    images = len(data.train) // args.batch_size * args.batch_size
    peak = matmul_peak(device, args.matmul_size)
    floor_s = per_image * images / peak
    ratio = epoch_s / floor_s
    print(
        table(
            [
                ("quantity", "value"),
                ("training images per epoch", f"{images}"),
                ("GFLOP per image (KD step)", f"{per_image / 1e9:.2f}"),
                ("TFLOP per epoch", f"{per_image * images / 1e12:.2f}"),
                ("matmul peak, TFLOP/s", f"{peak / 1e12:.3f}"),
                ("floor, s", f"{floor_s:.2f}"),
                ("epoch (after warm-up), s", f"{epoch_s:.2f}"),
                ("warm-up (128 images), s", f"{warmup_s:.2f}"),
                ("fraction of peak", f"{floor_s / epoch_s:.3f}"),
            ]
        )
    )
    pair = f"{args.teacher} -> {args.student}, batch {args.batch_size}"
    print(f"{pair}: epoch / floor = {ratio:.2f}x")
    payload = {
        "teacher": args.teacher,
        "student": args.student,
        "images": images,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "gflop_per_image": per_image / 1e9,
        "matmul_peak_tflops": peak / 1e12,
        "floor_s": floor_s,
        "epoch_s": epoch_s,
        "warmup_s": warmup_s,
        "fraction_of_peak": floor_s / epoch_s,
        "ratio": ratio,
    }
    print(f"wrote {write_result('epoch_floor', device, payload, quick=args.quick)}")
    return payload


if __name__ == "__main__":
    main()
