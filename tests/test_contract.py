"""A new method touches only methods and losses: here a toy method (its loss, its step and its
hyperparameter declarations) is defined entirely in this test, registered, and run through a
real smoke study on Ray Tune, Optuna and a sqlite MLflow store, as any built-in method is."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from torch import Tensor

from kdtune import losses
from kdtune.hparams import HParam
from kdtune.methods import METHODS, TEMPERATURE, Method, register


def soft_hinge(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, *,
               temperature: float, margin: float) -> Tensor:  # fmt: skip
    """A toy objective: squared hinge between the tempered log-probabilities."""
    gap = (F.log_softmax(teacher_logits / temperature, 1)
           - F.log_softmax(student_logits / temperature, 1)).abs()  # fmt: skip
    return torch.clamp(gap - margin, min=0).pow(2).sum(1).mean()


def _toy_step(student, teacher, batch, p) -> Tensor:
    s, t = student(batch.x), teacher(batch.x)
    hinge = soft_hinge(s, t, batch.y, temperature=p["temperature"], margin=p["margin"])
    ce = losses.ce(s, t, batch.y) if p["with_ce"] else 0.0
    return ce + batch.kd_scale * p["w_hinge"] * hinge


TOY = Method(
    _toy_step,
    (TEMPERATURE.at(3.0, "a test", search=(1.0, 8.0)),
     HParam("margin", float, 0.1, low=0.0, meaning="slack of the toy hinge", source="a test",
            search=(0.0, 0.5)),
     HParam("w_hinge", float, 1.0, low=0.0, meaning="weight of the toy hinge", source="a test"),
     HParam("with_ce", bool, True, meaning="add the cross-entropy on labels", source="a test"),
     HParam("hinge_power", int, 2, low=1, meaning="unused here", source="a test")),
    uses_teacher=True, reference="tests/test_contract.py", summary="a toy hinge distillation",
)  # fmt: skip


@pytest.fixture
def toy_method():
    register("toy_hinge", TOY)
    yield "toy_hinge"
    METHODS.pop("toy_hinge")


def test_a_method_defined_in_a_test_runs_a_real_smoke_study(toy_method, ray_local, tmp_path):
    import studies.temperature_sweep as study
    from kdtune.study import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = dataclasses.replace(study.SMOKE, name="toy", methods=(toy_method,), num_samples=2,
                               scheduler="fifo", front_seeds=1, storage_path=str(tmp_path / "ray"))
    result = run_study(spec, tracking_uri=uri, log=lambda _: None)
    rows = result.table.to_pylist()
    assert [r["status"] for r in rows] == ["TERMINATED"] * 2
    for row in rows:  # searched within its declared range, held ones at their defaults, typed
        assert 1.0 <= row["temperature"] <= 8.0 and 0.0 <= row["margin"] <= 0.5
        assert row["w_hinge"] == 1.0 and row["with_ce"] is True and row["hinge_power"] == 2
        assert 0 <= row["test_acc"] <= 1
    assert result.table.schema.field("with_ce").type == "bool"
    assert result.table.schema.field("hinge_power").type == "int64"
    client = MlflowClient(uri)
    for row in rows:
        params = client.get_run(row["mlflow_run_id"]).data.params
        assert params["method"] == "toy_hinge" and params["with_ce"] == "true"
        assert params["hinge_power"] == "2" and float(params["margin"]) == row["margin"]


def test_a_method_name_is_registered_once():
    with pytest.raises(ValueError, match="exists already"):
        register("kd", TOY)
