from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
from torchvision import datasets

from kdtune.config import ConfigError
from kdtune.data import load_dataset, load_digits


def test_digits_splits_are_disjoint_complete_and_seeded(digits):
    sizes = (len(digits.train), len(digits.val), len(digits.test))
    assert sum(sizes) == 1797 and digits.num_classes == 10 and digits.in_shape == (1, 8, 8)
    assert digits.train.x.dtype == torch.uint8 and digits.train.x.max() == 255
    rows = {
        tuple(x.flatten().tolist()) + (int(y),)
        for split in (digits.train, digits.val, digits.test)
        for x, y in zip(split.x, split.y)
    }
    assert len(rows) >= 1797 - 20  # a few digits images are exact duplicates in the raw data
    again = load_digits(seed=0)
    assert torch.equal(again.val.x, digits.val.x)
    other = load_digits(seed=1)
    assert not torch.equal(other.val.y, digits.val.y)
    # stratified: every class appears in validation in proportion (about 36 each)
    assert torch.bincount(digits.val.y).min() >= 30


def test_normalize_uses_training_statistics(digits):
    x = digits.normalize(digits.train.x)
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert x.std().item() == pytest.approx(1.0, abs=1e-2)


def _write_tiny_cifar10(root, monkeypatch, per_batch: int = 20) -> np.ndarray:
    """A CIFAR-10-format folder (pickled batches) and the md5 list torchvision checks it against."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    first_image = None
    for name in names:
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        first_image = data[0] if first_image is None else first_image
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, handle)

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(datasets.CIFAR10, "train_list", [[n, md5(n)] for n in names[:5]])
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", md5("test_batch")]])
    monkeypatch.setattr(
        datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": md5("batches.meta")}
    )
    return first_image


def test_cifar10_loads_through_torchvision_from_a_local_folder(tmp_path, monkeypatch):
    first_image = _write_tiny_cifar10(tmp_path, monkeypatch)
    bundle = load_dataset("cifar10", seed=0, root=str(tmp_path))
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (90, 10, 20)
    assert bundle.in_shape == (3, 32, 32) and bundle.num_classes == 10 and bundle.flip
    # CHW layout: the first stored image (CHW-flattened rows in the pickle) is found intact
    images = torch.cat([bundle.train.x, bundle.val.x]).reshape(100, -1)
    assert (images == torch.from_numpy(first_image)).all(dim=1).any()


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(ConfigError, match="--download"):
        load_dataset("cifar100", seed=0, root=str(tmp_path))


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="digits"):
        load_dataset("mnist", seed=0)
