"""KD training throughput: kdtune's step vs a reference loop in the classic CIFAR KD style.

Both train the same student against the same frozen teacher with Hinton KD (T = 4, 0.1 CE +
0.9 KD, SGD) on the same synthetic CIFAR-shaped data, in this process, one after the other:
- reference: a torchvision-style Dataset of HWC uint8 images with per-sample PIL transforms
  (RandomCrop(32, 4), RandomHorizontalFlip, ToTensor, Normalize), a DataLoader, fp32, batch 64;
- kdtune: `engine.fit` with data resident on the device as uint8 and batched on-device
  crop+flip (plus bf16 autocast, channels_last and a fused optimiser on CUDA);
- and, for information, kdtune with the teacher's logits cached (no augmentation).
Prints images/s for each and the ratio kdtune / reference; writes bench/results/.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench.common import synthetic_cifar, table, write_result
from kdtune.config import Recipe
from kdtune.engine import fit, frozen, predict, resolve_device
from kdtune.methods import METHODS
from kdtune.models import build_model


class ClassicCifar(Dataset):
    """What the classic KD repositories do: one PIL image and a transform chain per sample."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, mean, std) -> None:
        self.images, self.labels = images_hwc, labels
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def reference_images_per_second(student, teacher, data, device, epochs: int, workers: int) -> float:
    images = data.train.x.permute(0, 2, 3, 1).cpu().numpy()
    loader = DataLoader(
        ClassicCifar(images, data.train.y.cpu().numpy(), data.mean, data.std),
        batch_size=64,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
    )
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    teacher.eval()
    student.train()
    seen, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            kd = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
            loss = 0.1 * F.cross_entropy(s, y) + 0.9 * kd
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def kdtune_images_per_second(student, teacher, data, epochs: int, cached: bool = False) -> float:
    """`cached`: the teacher's logits looked up (computed before the clock starts), which
    needs the random crop/flip off: what `--cache-teacher-logits --no-augment` runs."""
    recipe = Recipe(epochs=epochs, batch_size=64, lr=0.05, augment=not cached)
    params = METHODS["kd"].defaults
    logits = predict(teacher, data.train.x, data.normalize) if cached else None
    start = time.perf_counter()
    fit(
        student, data, METHODS["kd"], params, recipe, teacher=frozen(teacher), teacher_logits=logits
    )
    if data.train.x.device.type == "cuda":
        torch.cuda.synchronize()
    return epochs * (len(data.train) // 64 * 64) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="CPU-sized: small models, 1 epoch of 960 images"
    )
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--images", type=int, default=50000, help="synthetic training images")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader workers of the reference"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.teacher, args.student, args.images = "resnet20", "resnet8x4", 960
    device = resolve_device("auto")
    data = synthetic_cifar(args.images)
    rates = {}
    for name in ("reference", "kdtune", "kdtune_cached"):
        torch.manual_seed(0)
        teacher = build_model(args.teacher, data.num_classes, data.in_shape).to(device)
        student = build_model(args.student, data.num_classes, data.in_shape).to(device)
        if name == "reference":
            rates[name] = reference_images_per_second(
                student, teacher, data, device, args.epochs, args.workers
            )
        else:
            rates[name] = kdtune_images_per_second(student, teacher, data.to(device), args.epochs,
                                                   cached=name == "kdtune_cached")  # fmt: skip
    ratio = rates["kdtune"] / rates["reference"]
    print(
        table(
            [
                ("loop", "images/s"),
                ("reference (Dataset + DataLoader, fp32)", f"{rates['reference']:.1f}"),
                ("kdtune (on-device uint8, batched augmentation)", f"{rates['kdtune']:.1f}"),
                ("kdtune, cached teacher logits, no augmentation", f"{rates['kdtune_cached']:.1f}"),
            ]
        )
    )
    print(
        f"{args.teacher} -> {args.student}, {args.images} images: kdtune / reference = {ratio:.2f}x"
    )
    payload = {
        "teacher": args.teacher,
        "student": args.student,
        "images": args.images,
        "epochs": args.epochs,
        "images_per_s": rates,
        "ratio": ratio,
    }
    print(f"wrote {write_result('step_throughput', device, payload, quick=args.quick)}")
    return payload


if __name__ == "__main__":
    main()
