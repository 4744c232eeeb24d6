"""Bring your own teacher: a study takes a trained teacher's checkpoint (mdistiller's format
here) instead of training one, measures it as its own, and records the file's digest."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from mlflow.tracking import MlflowClient

from kdtune import metrics
from kdtune.config import ConfigError
from kdtune.engine import predict
from kdtune.models import build_model


def _save_mdistiller_checkpoint(model: torch.nn.Module, path) -> None:
    """As mdistiller's trainer saves a CIFAR-100 teacher: the weights under "model", beside the
    training state."""
    torch.save({"model": model.state_dict(), "best_acc": 0.5, "epoch": 240,
                "optimizer": {"state": {}, "param_groups": []}}, path)  # fmt: skip


def _spec(tmp_path, checkpoint, **changes):
    import studies.temperature_sweep as study

    fields = {"name": "own_teacher", "methods": ("kd",), "num_samples": 1, "scheduler": "fifo",
              "front_seeds": 1,
              "storage_path": str(tmp_path / "ray"), "teacher_checkpoint": str(checkpoint)}
    return dataclasses.replace(study.SMOKE, **{**fields, **changes})


def test_a_study_distils_from_the_users_checkpoint_and_records_its_digest(
    digits, ray_local, tmp_path
):  # fmt: skip
    from kdtune.study import run_study

    torch.manual_seed(3)
    teacher = build_model("cnn", digits.num_classes, digits.in_shape)
    with torch.no_grad():  # BatchNorm statistics of its own, so a wrong load would show
        for name, buffer in teacher.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
    path = tmp_path / "cnn_teacher.pth"
    _save_mdistiller_checkpoint(teacher, path)
    lines: list[str] = []
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(_spec(tmp_path, path), tracking_uri=uri, log=lines.append)

    assert not any("training" in line for line in lines if line.startswith("teacher:")), lines
    expected = metrics.evaluate(predict(teacher, digits.test.x, digits.normalize), digits.test.y)
    assert result.teacher_metrics["teacher_test_acc"] == pytest.approx(expected["acc"])
    assert result.teacher_metrics["teacher_test_nll"] == pytest.approx(expected["nll"], rel=1e-5)
    params = MlflowClient(uri).get_run(result.parent_run_id).data.params
    assert params["teacher_checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert params["teacher_checkpoint"] == str(path) and "teacher_recipe" not in params
    assert [row["status"] for row in result.table.to_pylist()] == ["TERMINATED"]


def test_a_checkpoint_of_another_architecture_is_one_error_before_ray(tmp_path):
    from kdtune.study import run_study

    path = tmp_path / "resnet8x4.pth"
    _save_mdistiller_checkpoint(build_model("resnet8x4", 10, (1, 8, 8)), path)
    lines: list[str] = []
    with pytest.raises(ConfigError, match=r"teacher checkpoint .*resnet8x4\.pth does not fit cnn: "
                                          r"missing key '[\w.]+'"):  # fmt: skip
        run_study(_spec(tmp_path, path), log=lines.append)
    assert not any(line.startswith("ray:") for line in lines), lines


@pytest.mark.parametrize(("checkpoint", "changes", "message"), [
    ("absent.pth", {}, "teacher checkpoint .*absent.pth does not exist"),
    ("notes.pth", {}, "notes.pth cannot be read"),
    ("absent.pth", {"methods": ("ce",)}, "teacher_checkpoint: no method of this study uses"),
])  # fmt: skip
def test_a_checkpoint_that_cannot_serve_is_refused_by_validation(tmp_path, checkpoint, changes,
                                                                 message):  # fmt: skip
    from kdtune.study import validate_spec

    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=message):
        validate_spec(_spec(tmp_path, tmp_path / checkpoint, **changes))


def test_a_checkpoint_that_is_no_file_or_holds_nan_weights_is_named_by_validation(tmp_path):
    """A folder or a pipe once read "does not exist"; NaN weights once failed far inside the
    teacher's measurement (`bincount only supports ... non-negative`)."""
    import os

    from kdtune.study import validate_spec

    diverged = build_model("cnn", 10, (1, 8, 8))
    with torch.no_grad():
        next(iter(diverged.parameters())).fill_(float("nan"))
    _save_mdistiller_checkpoint(diverged, tmp_path / "diverged.pth")
    (tmp_path / "folder.pth").mkdir()
    os.mkfifo(tmp_path / "pipe.pth")
    for name, message in (("folder.pth", "folder.pth is a folder; give the checkpoint file"),
                          ("pipe.pth", "pipe.pth is not a regular file"),
                          ("diverged.pth", r"the teacher's weights are not finite \(NaN or inf "
                                           r"in 1 tensors, first '[\w.]+'\)")):  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            validate_spec(_spec(tmp_path, tmp_path / name))
