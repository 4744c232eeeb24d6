"""The training loop's hot path: no host sync per step, NaN caught within a check window, and the
GPU's fast-path branches (bf16 autocast, channels_last, fused optimiser) run on CPU too."""

from __future__ import annotations

import pytest
import torch

from kdtune import engine
from kdtune.config import Recipe
from kdtune.engine import NONFINITE_CHECK_STEPS, NonFiniteLossError, fit, frozen, network, predict
from kdtune.methods import METHODS, Method
from kdtune.models import build_model


def _steps_per_epoch(digits, batch_size: int) -> int:
    return -(-len(digits.train) // batch_size)


@pytest.mark.parametrize("method", ["kd", "crld"])  # crld: per-image RandAugment of uint8 views
def test_training_reads_the_device_once_per_check_window(digits, monkeypatch, method):
    """Everything that would make a GPU wait for the host (item, bool, float, int, tolist,
    nonzero) is counted over a training: one read per NONFINITE_CHECK_STEPS steps and one per
    epoch."""
    teacher = frozen(build_model("cnn", 10, digits.in_shape))
    student = build_model("mlp", 10, digits.in_shape)
    reads = []
    # nonzero: its output size is read from the device, a sync on a GPU like item()
    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "nonzero"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    epochs, batch_size = 2, 8
    fit(student, digits, METHODS[method], METHODS[method].defaults,
        Recipe(epochs=epochs, batch_size=batch_size), teacher=teacher)  # fmt: skip
    steps = _steps_per_epoch(digits, batch_size)
    assert steps > 2 * NONFINITE_CHECK_STEPS
    assert len(reads) == epochs * (1 + steps // NONFINITE_CHECK_STEPS), reads


def test_a_nan_loss_stops_training_at_the_first_check_window(digits):
    calls = []

    def nan_step(student, teacher, batch, p):
        calls.append(1)
        return student(batch.x).sum() * float("nan")

    method = Method(nan_step, (), uses_teacher=False, reference="test", summary="test")
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at epoch 1: lower"):
        fit(build_model("mlp", 10, digits.in_shape), digits, method, {},
            Recipe(epochs=3, batch_size=8))  # fmt: skip
    assert len(calls) == NONFINITE_CHECK_STEPS < _steps_per_epoch(digits, 8)


def test_fast_path_switches_run_on_cpu_and_learn_like_fp32(digits):
    """bf16 autocast, channels_last weights and the fused optimiser: the code CUDA runs by
    default, forced on here. Logits come back in float32 for the losses."""
    fast = Recipe(epochs=4, batch_size=32, precision="bf16", channels_last="on",
                  fused_optimizer="on", augment=False)  # fmt: skip
    plain = Recipe(epochs=4, batch_size=32, precision="fp32", channels_last="off",
                   fused_optimizer="off", augment=False)  # fmt: skip
    accuracy = {}
    for name, recipe in (("fast", fast), ("plain", plain)):
        torch.manual_seed(0)
        model = build_model("cnn", 10, digits.in_shape)
        fit(model, digits, METHODS["ce"], {}, recipe)
        logits = predict(model, digits.test.x, digits.normalize, precision=recipe.precision)
        accuracy[name] = (logits.argmax(1) == digits.test.y).float().mean().item()
        convolutions = [p for p in model.parameters() if p.dim() == 4]
        assert all(p.is_contiguous(memory_format=torch.channels_last) for p in convolutions) == (
            recipe.channels_last == "on"
        )
        optimizer = engine._optimizer(model, recipe, torch.device("cpu"))
        assert optimizer.defaults["fused"] is (recipe.fused_optimizer == "on")
    assert accuracy["plain"] > 0.8
    assert accuracy["fast"] == pytest.approx(accuracy["plain"], abs=0.05)
    model = build_model("cnn", 10, digits.in_shape)
    inner = []
    model.head.register_forward_hook(lambda module, args, out: inner.append(out.dtype))
    logits = network(model, torch.device("cpu"), fast)(digits.normalize(digits.train.x[:4]))
    assert inner == [torch.bfloat16] and logits.dtype == torch.float32


def test_auto_turns_the_fast_path_on_for_cuda_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not engine._on("auto", cpu) and engine._on("auto", cuda)
    assert engine._on("on", cpu) and engine._on("bf16", cpu) and not engine._on("off", cuda)
    assert not engine._on("fp32", cuda)


def test_step_schedule_is_the_benchmarks_at_every_milestone():
    """240 epochs of the step schedule: LR 0.05 until epoch 150, then x0.1 at 150, 180 and 210
    (1-based: the first epoch at the lower LR is 151), as mdistiller's
    LR_DECAY_STAGES [150, 180, 210] give it; the engine's LR factor driving a real SGD, as fit
    does."""
    assert engine.step_milestones(240) == (150, 180, 210)
    recipe = Recipe(epochs=240, lr=0.05, schedule="step", optimizer="sgd")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, engine._lr_factor(recipe))
    seen = {}
    for epoch in range(240):
        seen[epoch] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
    expected = {0: 0.05, 149: 0.05, 150: 0.005, 179: 0.005, 180: 5e-4, 209: 5e-4, 210: 5e-5,
                239: 5e-5}  # fmt: skip
    for epoch, lr in expected.items():
        assert seen[epoch] == pytest.approx(lr, rel=1e-9), epoch


class _Recorded(Exception):
    pass


def test_crlds_strong_view_gets_the_uncropped_batch_and_the_datasets_crop(digits, monkeypatch):
    """The engine hands CRLD's strong view the batch before the weak view's crop, so the two
    views crop and flip on draws of their own, as in CRLD's loader."""
    from dataclasses import replace

    data = replace(digits, crop_padding=2, flip=True)
    seen = {}

    def recording_view(x, *, fill, padding, flip):
        seen.update(x=x, padding=padding, flip=flip)
        raise _Recorded

    monkeypatch.setattr("kdtune.augment.strong_view", recording_view)
    teacher = frozen(build_model("cnn", 10, data.in_shape))
    with pytest.raises(_Recorded):
        fit(build_model("cnn", 10, data.in_shape), data, METHODS["crld"], METHODS["crld"].defaults,
            Recipe(epochs=1, batch_size=8), teacher=teacher)  # fmt: skip
    assert (seen["padding"], seen["flip"]) == (2, True)
    rows = data.train.x.flatten(1)
    # every image handed over is a training image exactly as stored, not a crop of one
    assert all((rows == image.flatten()).all(1).any() for image in seen["x"])
