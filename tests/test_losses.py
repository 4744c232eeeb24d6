from __future__ import annotations

import inspect
import math
import subprocess
import sys

import pytest
import torch

from kdtune.losses import LOSSES, ce, kd
from kdtune.methods import METHODS


def test_kd_matches_hand_computed_value():
    # t / T = [ln 3, 0] -> p_t = [3/4, 1/4]; s = 0 -> p_s = [1/2, 1/2]
    temperature = 2.0
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])
    student = torch.zeros(1, 2)
    expected = temperature**2 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert kd(student, teacher, torch.tensor([0]), temperature=temperature).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_kd_sums_over_classes_and_averages_over_samples():
    teacher = torch.tensor([[2 * math.log(3.0), 0.0], [1.0, -1.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, -1.0]])  # second sample: student == teacher
    one = kd(student[:1], teacher[:1], torch.tensor([0]), temperature=2.0)
    both = kd(student, teacher, torch.tensor([0, 0]), temperature=2.0)
    assert both.item() == pytest.approx(one.item() / 2, rel=1e-6)


def test_ce_accepts_labels_and_distributions_equally():
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 3, 1, 2, 3])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    assert ce(logits, None, labels).item() == pytest.approx(
        ce(logits, None, one_hot).item(), rel=1e-6
    )


def _keywords(loss) -> list[str]:
    return [p.name for p in inspect.signature(loss).parameters.values() if p.kind == p.KEYWORD_ONLY]


# Each loss at its method's declared defaults: the hyperparameters reach the loss by name.
LOSS_KWARGS = {name: {k: METHODS[name].defaults[k] for k in _keywords(loss)}
               for name, loss in LOSSES.items()}  # fmt: skip
ZERO_WHEN_EQUAL = ("kd", "lskd", "dkd")


def _hyperparameters(name: str) -> dict:
    return LOSS_KWARGS[name]


def test_every_loss_keyword_is_a_declared_hyperparameter_of_its_method():
    """A loss's keyword-only arguments are its method's hyperparameters, under the same names
    (one name, one meaning, from the declaration to the formula)."""
    for name, loss in LOSSES.items():
        declared = {h.name for h in METHODS[name].hparams}
        assert set(_keywords(loss)) <= declared, name
    assert set(LOSS_KWARGS["dkd"]) == {"temperature", "w_tckd", "w_nckd"}


@pytest.mark.parametrize("name", ZERO_WHEN_EQUAL)
def test_distillation_loss_is_zero_when_student_equals_teacher(name):
    logits = torch.randn(6, 7)
    labels = torch.randint(0, 7, (6,))
    assert LOSSES[name](logits, logits, labels, **LOSS_KWARGS[name]).item() == pytest.approx(
        0, abs=1e-5
    )


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_contract(name):
    """Every loss: finite scalar, differentiable in the student logits, batch-order invariant."""
    torch.manual_seed(0)
    student = torch.randn(8, 5, requires_grad=True)
    teacher = torch.randn(8, 5)
    labels = torch.randint(0, 5, (8,))
    loss = LOSSES[name](student, teacher, labels, **_hyperparameters(name))
    assert loss.dim() == 0 and torch.isfinite(loss)
    (grad,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    order = torch.randperm(8)
    shuffled = LOSSES[name](student[order], teacher[order], labels[order], **_hyperparameters(name))
    assert shuffled.item() == pytest.approx(loss.item(), rel=1e-5)


def test_losses_module_imports_neither_ray_nor_mlflow():
    code = (
        "import sys, kdtune.losses; print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
