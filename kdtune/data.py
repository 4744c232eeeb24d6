"""Datasets as tensors: seeded train/val/test splits, moved to the device once.

Images are kept as uint8 (N, C, H, W) so they are cheap to ship through Ray's object store and to
keep on a GPU; `DatasetBundle.normalize` turns a batch into floats after augmentation.
The validation split is always held out of the training set: T is fitted and models are
selected on it, never on the test split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kdtune.config import ConfigError


@dataclass(frozen=True)
class Split:
    x: Tensor  # uint8 images (N, C, H, W)
    y: Tensor  # int64 labels (N,)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class DatasetBundle:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]  # per channel, of pixel / 255, measured on the training split
    std: tuple[float, ...]
    crop_padding: int  # default training augmentation: random crop with this padding ...
    flip: bool  # ... and horizontal flips where the classes are mirror-invariant
    # False under the CIFAR benchmark protocol: no validation split, the whole training set is
    # trained on, and every epoch is evaluated on the test split
    holdout: bool = True

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def monitored(self) -> tuple[str, Split]:
        """The split every epoch is evaluated on, with its name: the validation split, or the
        test split where there is none."""
        return ("val", self.val) if self.holdout else ("test", self.test)

    def without_holdout(self) -> DatasetBundle:
        """The benchmark protocol's data: the validation images back in the training set (all
        50,000 of CIFAR's), no validation split. Mean and std stay those of the held-out
        training split (CIFAR-100's differ from the full set's by less than 0.001)."""
        train = Split(torch.cat([self.train.x, self.val.x]), torch.cat([self.train.y, self.val.y]))
        empty = Split(self.val.x[:0], self.val.y[:0])
        return replace(self, train=train, val=empty, holdout=False)

    def to(self, device: torch.device | str) -> DatasetBundle:
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )

    def normalizer(self, device: torch.device | str) -> Callable[[Tensor], Tensor]:
        """uint8 images -> normalised floats, its constants built once on `device` (the training
        loop calls it every step)."""
        mean = torch.tensor(self.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device).view(1, -1, 1, 1)

        def normalize(x: Tensor) -> Tensor:
            return (x.float() / 255.0 - mean) / std

        return normalize

    def normalize(self, x: Tensor) -> Tensor:
        return self.normalizer(x.device)(x)

    def fingerprint(self) -> str:
        """Content hash of the splits, so cached teachers are tied to the exact data."""
        digest = hashlib.sha256(self.name.encode())
        for split in (self.train, self.val, self.test):
            digest.update(split.x.cpu().numpy().tobytes())
            digest.update(split.y.cpu().numpy().tobytes())
        return digest.hexdigest()[:16]


def _bundle(
    name: str,
    x_trainval: np.ndarray,
    y_trainval: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    val_size: int,
    seed: int,
    crop_padding: int,
    flip: bool,
) -> DatasetBundle:
    """Hold `val_size` seeded, stratified samples out of the training set and wrap everything."""
    from sklearn.model_selection import train_test_split

    train_idx, val_idx = train_test_split(
        np.arange(len(y_trainval)), test_size=val_size, random_state=seed, stratify=y_trainval
    )
    x_train = x_trainval[train_idx]
    pixels = x_train.astype(np.float64) / 255.0
    mean = tuple(float(v) for v in pixels.mean(axis=(0, 2, 3)))
    std = tuple(float(v) for v in pixels.std(axis=(0, 2, 3)))

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        return Split(
            torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(y, dtype=torch.long)
        )

    return DatasetBundle(
        name=name,
        train=split(x_train, y_trainval[train_idx]),
        val=split(x_trainval[val_idx], y_trainval[val_idx]),
        test=split(x_test, y_test),
        num_classes=int(y_trainval.max()) + 1,
        mean=mean,
        std=std,
        crop_padding=crop_padding,
        flip=flip,
    )


def load_digits(*, seed: int, root: str = "", download: bool = False) -> DatasetBundle:
    """sklearn's 1797 real 8x8 handwritten digits (shipped inside scikit-learn): 60/20/20 split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    # Pixel values are 0..16; scale to the uint8 range every image dataset here uses.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    x_trainval, x_test, y_trainval, y_test = train_test_split(
        images, labels, test_size=0.2, random_state=seed, stratify=labels
    )
    # Digits are not mirror-invariant (2 vs 5); a 1-pixel jitter is the only safe augmentation.
    return _bundle(
        "digits",
        x_trainval,
        y_trainval,
        x_test,
        y_test,
        val_size=len(labels) // 5,
        seed=seed,
        crop_padding=1,
        flip=False,
    )


CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _no_cifar(name: str, root: str, why: str) -> ConfigError:
    folder = CIFAR_FOLDERS[name]
    return ConfigError(
        f"dataset {name!r}: no valid {folder}/ under data_root={str(Path(root).resolve())!r} "
        f"({why}); pass --download (needs internet) or point --data-root at a folder "
        f"that holds {folder}/"
    )


def check_dataset_files(name: str, root: str, download: bool) -> None:
    """A dataset's folder looked for before anything else starts (loading it comes later,
    after the cheaper checks): a study on missing files is one line, not a store and a Ray."""
    if name in CIFAR_FOLDERS and not download and not (Path(root) / CIFAR_FOLDERS[name]).is_dir():
        raise _no_cifar(name, root, "the folder is not there")


def _load_cifar(name: str, *, seed: int, root: str, download: bool) -> DatasetBundle:
    from torchvision import datasets

    dataset_class = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = dataset_class(root, train=True, download=download)
        test = dataset_class(root, train=False, download=download)
    except RuntimeError as error:
        raise _no_cifar(name, root, str(error)) from None

    def arrays(ds) -> tuple[np.ndarray, np.ndarray]:
        return ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets, dtype=np.int64)

    # 5,000 held-out training images for validation (METHODS.md section 7 recommendation).
    val_size = min(5000, len(train.targets) // 10)
    return _bundle(
        name,
        *arrays(train),
        *arrays(test),
        val_size=val_size,
        seed=seed,
        crop_padding=4,
        flip=True,
    )


def load_cifar10(*, seed: int, root: str, download: bool = False) -> DatasetBundle:
    return _load_cifar("cifar10", seed=seed, root=root, download=download)


def load_cifar100(*, seed: int, root: str, download: bool = False) -> DatasetBundle:
    return _load_cifar("cifar100", seed=seed, root=root, download=download)


def load_synthetic(
    *, seed: int, root: str = "", download: bool = False, size: int = 5000, num_classes: int = 100
) -> DatasetBundle:
    """Random CIFAR-shaped uint8 images with random labels: for throughput benchmarks only
    (nothing can be learned from it)."""
    generator = np.random.default_rng(seed)
    images = generator.integers(0, 256, (size, 3, 32, 32), dtype=np.uint8)
    labels = generator.integers(0, num_classes, size).astype(np.int64)
    test = size // 10
    return _bundle(
        "synthetic", images[test:], labels[test:], images[:test], labels[:test],
        val_size=test, seed=seed, crop_padding=4, flip=True,
    )  # fmt: skip


EMBEDDED = ("synthetic", "digits")  # made or shipped in the code: no data_root, no download
DATASETS: dict[str, Callable[..., DatasetBundle]] = {
    "synthetic": load_synthetic,
    "digits": load_digits,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}


def load_dataset(
    name: str, *, seed: int, root: str = "./data", download: bool = False
) -> DatasetBundle:
    if name not in DATASETS:
        raise ConfigError(f"dataset: unknown {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](seed=seed, root=root, download=download)
