"""studies/cifar_benchmark.py --smoke-test on a tiny CIFAR-100 folder in CIFAR's own format,
read by torchvision's CIFAR100 class (its integrity check included: the test registers the
checksums of the files it wrote), through a real Ray Tune study under the benchmark protocol."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torchvision.datasets

from kdtune.models import build_model

TRAIN, TEST, CLASSES = 400, 100, 10  # labels 0-9 of CIFAR-100's fine labels


def write_cifar100(root: Path, seed: int = 0) -> dict[str, str]:
    """cifar-100-python/{train,test,meta} as the real archive lays them out (pickled dicts
    of uint8 rows of 3 x 32 x 32 pixels and fine labels); returns each file's md5."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    sums = {}
    for name, count in (("train", TRAIN), ("test", TEST)):
        labels = np.arange(count) % CLASSES
        # a class-dependent mean colour, so the split is learnable at all
        pixels = rng.integers(0, 96, (count, 3 * 32 * 32)) + (labels[:, None] * 16)
        entry = {"data": pixels.astype(np.uint8), "fine_labels": labels.tolist(),
                 "coarse_labels": (labels // 5).tolist()}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(entry))
    meta = {"fine_label_names": [f"class{i}" for i in range(100)],
            "coarse_label_names": [f"super{i}" for i in range(20)]}  # fmt: skip
    (folder / "meta").write_bytes(pickle.dumps(meta))
    for name in ("train", "test", "meta"):
        sums[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return sums


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    sums = write_cifar100(tmp_path / "data")
    cifar = torchvision.datasets.CIFAR100
    monkeypatch.setattr(cifar, "train_list", [["train", sums["train"]]])
    monkeypatch.setattr(cifar, "test_list", [["test", sums["test"]]])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": sums["meta"]})
    return tmp_path / "data"


def test_the_benchmark_smoke_study_prints_each_method_beside_its_published_number(
    tiny_cifar, ray_local, tmp_path, capsys
):  # fmt: skip
    import studies.cifar_benchmark as study

    # the pair's teacher from a checkpoint in mdistiller's format, as its published ones are
    checkpoint = tmp_path / "resnet56_vanilla.pth"
    torch.save({"model": build_model("resnet56", 10, (3, 32, 32)).state_dict(), "epoch": 240},
               checkpoint)  # fmt: skip
    summaries = study.main(["--smoke-test", "--data-root", str(tiny_cifar), "--storage",
                            str(tmp_path / "ray"), "--tracking-uri",
                            f"sqlite:///{tmp_path / 'mlflow.db'}",
                            "--pairs", f"resnet56:resnet20:{checkpoint}"])  # fmt: skip
    out = capsys.readouterr().out
    assert "train/val/test = 400/0/100, 10 classes, shape (3, 32, 32)" in out
    assert f"teacher: resnet56 from {checkpoint}" in out and "teacher: training" not in out
    assert "defaults of resnet56 -> resnet20 (official configs): dkd.w_nckd 2" in out
    (summary,) = summaries
    assert [e["method"] for e in summary] == ["kd", "dkd"]
    assert all(0.0 <= e["test_acc_mean"] <= 1.0 for e in summary)
    # the published numbers of resnet56 -> resnet20: KD 70.66, DKD 71.97
    table = out[out.index("CIFAR-100 benchmark, resnet56 -> resnet20"):]
    kd_line = next(line for line in table.splitlines() if line.strip().startswith("kd"))
    dkd_line = next(line for line in table.splitlines() if line.strip().startswith("dkd"))
    assert "70.66" in kd_line and "71.97" in dkd_line
    folder = tmp_path / "ray" / "cifar_benchmark-resnet56-resnet20"
    rows = pq.read_table(folder / "results.parquet").to_pylist()
    assert {r["method"] for r in rows} == {"kd", "dkd"}
    assert all(r["w_nckd"] == 2.0 for r in rows if r["method"] == "dkd")  # the pair's beta
    assert all(r["schedule"] == "step" and r["epochs"] == 1 for r in rows)
    assert all(r["test_acc_best_epoch_selected_on_test"] == r["test_acc"] for r in rows)


def test_a_bad_pair_list_is_one_line(capsys):
    import studies.cifar_benchmark as study

    with pytest.raises(SystemExit) as stop:
        study.main(["--pairs", "resnet32x4"])
    assert stop.value.code == 2
    assert "write TEACHER:STUDENT" in capsys.readouterr().err
