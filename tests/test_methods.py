"""Issue 3: every method's loss by hand or by an independent re-implementation, its views, its
search space, and one real trial per method on digits."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch
import torch.nn.functional as F

from kdtune import augment, losses
from kdtune.config import Recipe, StudySpec, TrialConfig
from kdtune.engine import fit
from kdtune.hparams import RAMP_EPOCHS, HParam
from kdtune.methods import METHODS, WARMUP, Method, StepBatch, declarations, highest_entropy
from kdtune.search import DefineByRun


def _numpy_dkd(
    s: np.ndarray, t: np.ndarray, y: np.ndarray, T: float, alpha: float, beta: float
) -> float:
    """DKD written straight from its published formula, one sample at a time."""
    total = 0.0
    for zs, zt, label in zip(s, t, y):
        ps, pt = np.exp(zs / T) / np.exp(zs / T).sum(), np.exp(zt / T) / np.exp(zt / T).sum()
        bs, bt = np.array([ps[label], 1 - ps[label]]), np.array([pt[label], 1 - pt[label]])
        tckd = (bt * np.log(bt / bs)).sum()
        others = [c for c in range(len(zs)) if c != label]
        qs = np.exp(zs[others] / T) / np.exp(zs[others] / T).sum()
        qt = np.exp(zt[others] / T) / np.exp(zt[others] / T).sum()
        nckd = (qt * np.log(qt / qs)).sum()
        total += (alpha * tckd + beta * nckd) * T**2
    return total / len(y)


def test_dkd_matches_straight_line_reimplementation():
    torch.manual_seed(0)
    s, t = torch.randn(6, 5, dtype=torch.float64) * 2, torch.randn(6, 5, dtype=torch.float64) * 2
    y = torch.randint(0, 5, (6,))
    for T, alpha, beta in ((4.0, 1.0, 8.0), (1.5, 0.5, 2.0)):
        ours = losses.dkd(s, t, y, temperature=T, w_tckd=alpha, w_nckd=beta).item()
        assert ours == pytest.approx(
            _numpy_dkd(s.numpy(), t.numpy(), y.numpy(), T, alpha, beta), rel=1e-6
        )


def _exact_tckd(student_gap: float, teacher_gap: float, classes: int) -> float:
    """TCKD at T = 1 for logits (gap, 0, ..., 0) with the target first, in closed form:
    log p_target = gap - log(e^gap + C - 1), log(1 - p_target) = log(C - 1) - log(e^gap + C - 1),
    with log(e^gap + C - 1) = gap + log1p((C - 1) e^-gap) so that nothing overflows."""

    def logs(gap: float) -> tuple[float, float]:
        norm = gap + math.log1p((classes - 1) * math.exp(-gap))
        return gap - norm, math.log(classes - 1) - norm

    (s_target, s_rest), (t_target, t_rest) = logs(student_gap), logs(teacher_gap)
    return (math.exp(t_target) * (t_target - s_target) + math.exp(t_rest) * (t_rest - s_rest))


@pytest.mark.parametrize("student_gap", [5.0, 17.0, 40.0, 90.0])
def test_dkd_tckd_keeps_a_confident_students_rest_mass(student_gap):
    """float32 logits of a student sure of the target: 1 - p_target underflows, its log does
    not; TCKD must match the exact value, and its gradient must not vanish."""
    classes, teacher_gap = 10, 3.0
    s = torch.zeros(1, classes)
    s[0, 0] = student_gap
    t = torch.zeros(1, classes)
    t[0, 0] = teacher_gap
    s.requires_grad_(True)
    tckd = losses.dkd(s, t, torch.tensor([0]), temperature=1.0, w_tckd=1.0, w_nckd=0.0)
    assert tckd.item() == pytest.approx(_exact_tckd(student_gap, teacher_gap, classes), rel=1e-5)
    tckd.backward()
    # d TCKD / d s_target = p_s(target) - p_t(target), about 1 - 0.69 for a sure student
    def p_target(gap: float) -> float:
        return 1 / (1 + (classes - 1) * math.exp(-gap))

    assert s.grad[0, 0].item() == pytest.approx(p_target(student_gap) - p_target(teacher_gap),
                                                rel=1e-4)  # fmt: skip


def test_dkd_with_logit_standardisation_keeps_the_ce_on_raw_logits():
    """LSKD's DKD: the decoupled terms on z-scored logits, the CE on the student's raw ones."""
    torch.manual_seed(1)
    x = torch.randn(6, 5) * 3
    teacher_logits = torch.randn(6, 5) * 4
    batch = StepBatch(x, torch.arange(6) % 5, 5, raw=x, normalize=lambda v: v,
                      fill=torch.zeros(3), kd_scale=0.5)  # fmt: skip
    params = METHODS["lsdkd"].defaults
    z = lambda v: (v - v.mean(1, keepdim=True)) / v.std(1, keepdim=True)  # noqa: E731
    expected = (F.cross_entropy(x, batch.y) + 0.5 * losses.dkd(
        z(x), z(teacher_logits), batch.y, temperature=2.0, w_tckd=9.0, w_nckd=72.0))  # fmt: skip
    got = METHODS["lsdkd"].step(lambda v: v, lambda v: teacher_logits, batch, params)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert (params["temperature"], params["w_tckd"], params["w_nckd"]) == (2.0, 9.0, 72.0)


def test_lskd_is_kd_on_z_scored_logits():
    s, t = torch.tensor([[1.0, 2.0, 6.0]]), torch.tensor([[3.0, 0.0, 0.0]])
    z = lambda v: (v - v.mean()) / v.std(ddof=1)  # noqa: E731
    zs, zt = z(s[0].numpy()), z(t[0].numpy())
    T = 2.0
    ps, pt = np.exp(zs / T) / np.exp(zs / T).sum(), np.exp(zt / T) / np.exp(zt / T).sum()
    expected = T**2 * (pt * np.log(pt / ps)).sum()
    assert losses.lskd(s, t, torch.tensor([0]), temperature=T).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_topk_scale_by_hand():
    t = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    # top-2 = classes 0 and 1, weights 2 and 1; Delta = 0.1 * (3.5 - mean(2, 1, 0)) = 0.25;
    # the true class 3 is outside the top 2, so it gets the top-1 weight 2.
    scaled = losses.topk_scale(t, torch.tensor([3]), k=2, topk_weight=2.0, topk_bias=0.1)
    assert scaled[0].tolist() == pytest.approx([8.25, 3.25, 2.0, 2.25, 0.0])
    inside = losses.topk_scale(t, torch.tensor([0]), k=2, topk_weight=2.0, topk_bias=0.1)
    assert inside[0].tolist() == pytest.approx([8.25, 3.25, 2.0, 1.0, 0.0])


@pytest.mark.parametrize("shift", [5.0, -30.0])
def test_topk_scale_ignores_a_constant_added_to_all_teacher_logits(shift):
    """Softmax does not see such a constant, so the scaled target must not either (the form
    that multiplied raw logits changed it: KL 0.07 at T = 4 for a shift of 5)."""
    torch.manual_seed(0)
    t, y = torch.randn(16, 10, dtype=torch.float64) * 3, torch.randint(0, 10, (16,))
    scale = dict(k=3, topk_weight=2.0, topk_bias=0.1)
    plain, shifted = losses.topk_scale(t, y, **scale), losses.topk_scale(t + shift, y, **scale)
    assert torch.allclose(shifted - shift, plain, atol=1e-10)
    assert losses.kd(plain, shifted, y, temperature=4.0).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("topk_weight", [0.5, 1.0, 2.0, 4.0])
def test_topk_scale_never_lowers_the_ground_truth_it_corrects(topk_weight):
    """A ground-truth class outside the top K is raised (or kept), never lowered, so its
    probability is at least what it would be without the correction."""
    torch.manual_seed(1)
    t = torch.randn(64, 10, dtype=torch.float64) * 3
    y = t.argsort(1)[:, 2]  # the third smallest logit: outside the top 3
    scaled = losses.topk_scale(t, y, k=3, topk_weight=topk_weight, topk_bias=0.1)
    rows = torch.arange(64)
    assert (scaled[rows, y] >= t[rows, y] - 1e-12).all()


def test_topkd_tdl_is_zero_when_student_equals_teacher_and_positive_otherwise():
    torch.manual_seed(0)
    t = torch.randn(8, 10)
    kwargs = dict(k=3, w_pos=1.0, w_neg=1.0, con_temperature=0.1, w_tdl=1.0, w_con=0.0)
    assert losses.topkd(t, t, torch.zeros(8, dtype=torch.long), **kwargs).item() == pytest.approx(
        0, abs=1e-6
    )
    assert (
        losses.topkd(torch.randn(8, 10), t, torch.zeros(8, dtype=torch.long), **kwargs).item() > 0.1
    )


def test_crld_gates_and_weights_by_hand():
    T = 4.0
    uniform, sharp = torch.zeros(10), torch.tensor([9.0] + [0.0] * 9)  # confidences 0.1 and ~0.9
    t_weak = torch.stack([sharp, uniform])  # weak-view confidence: sample 0 >= 0.9, sample 1 not
    t_strong = torch.stack(
        [uniform, sharp]
    )  # strong-view confidence: sample 0 < 0.2, sample 1 >= 0.2
    assert t_weak.softmax(1).max(1).values[0] >= 0.9
    torch.manual_seed(1)
    s_weak, s_strong, y = torch.randn(2, 10), torch.randn(2, 10), torch.tensor([0, 3])

    def kd1(s, t):
        return losses.kd(s[None], t[None], y[:1], temperature=T).item()

    within0 = kd1(s_weak[0], t_weak[0]) + kd1(s_strong[0], t_strong[0])
    cross1 = kd1(s_strong[1], t_weak[1]) + kd1(s_weak[1], t_strong[1])
    hard = F.cross_entropy(s_weak, y).item() + F.cross_entropy(s_strong, y).item()
    expected = (
        1.0 * hard + 2.0 * within0 / 2 + 0.5 * cross1 / 2
    )  # masked samples add 0, mean over 2
    got = losses.crld(s_weak, s_strong, t_weak, t_strong, y, temperature=T, tau_w=0.9, tau_s=0.2,
                      w_ce=1.0, w_wv=2.0, w_cv=0.5)  # fmt: skip
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_cutmix_box_area_is_one_minus_lambda_and_partners_differ():
    torch.manual_seed(0)
    for _ in range(20):
        x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 32, 32).contiguous()
        mixed, partner, lam = augment.cutmix(x)
        assert (partner != torch.arange(8)).all()
        pasted = (mixed != x).float().mean(dim=(1, 2, 3))
        assert torch.allclose(pasted, torch.full((8,), 1 - lam.item()), atol=1e-6)
        assert torch.equal(mixed[partner != partner, 0, 0, 0], x[partner != partner, 0, 0, 0])


def test_highest_entropy_keeps_the_most_uncertain_half():
    logits = torch.tensor(
        [[10.0, 0, 0], [0, 0, 0], [5, 0, 0], [1, 0, 0]]
    )  # entropies: low, max, mid, high
    assert sorted(highest_entropy(logits, 2).tolist()) == [1, 3]


def test_cutmixpick_with_teacher_entropy_trains_on_the_uncertain_half():
    torch.manual_seed(0)
    calls: list[torch.Tensor] = []
    weights = torch.randn(3 * 4 * 4, 5)

    def teacher(x):
        calls.append(x)
        return x.flatten(1) @ weights

    x = torch.randn(6, 3, 4, 4)
    batch = StepBatch(x, torch.arange(6) % 5, 5, raw=x, normalize=lambda v: v, fill=torch.zeros(3))
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    params = {**METHODS["cutmixpick_kd"].defaults, "pick": "t_ent"}
    METHODS["cutmixpick_kd"].step(student, teacher, batch, params)
    pool, picked = calls[0], calls[-1]
    assert len(pool) == 12 and len(picked) == 6
    chosen = highest_entropy(teacher(pool), 6)
    assert torch.equal(picked, pool[chosen])


@pytest.mark.parametrize("ramp", [WARMUP, HParam("ramp", int, 0, low=0.0, role=RAMP_EPOCHS,
                                                  meaning="a ramp of another name")])
def test_engine_ramps_distillation_weight_over_warmup_epochs(digits, ramp):
    """The engine finds the ramp by its declared role, whatever the method calls it."""
    seen: dict[int, float] = {}

    def recording_step(student, teacher, batch, p):
        seen[len(seen)] = batch.kd_scale
        return losses.ce(student(batch.x), None, batch.y)

    from kdtune.models import build_model

    model = build_model("mlp", 10, digits.in_shape)
    method = Method(recording_step, (ramp.at(4, "test"),), uses_teacher=False,
                    reference="test", summary="test")  # fmt: skip
    scales = []
    fit(model, digits, method, {ramp.name: 4}, Recipe(epochs=5, batch_size=2048),
        on_epoch=lambda end: scales.append(seen[len(seen) - 1]))  # fmt: skip
    assert scales == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_strong_view_keeps_uint8_and_changes_images():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    view = augment.strong_view(x, fill=torch.tensor([125, 123, 114], dtype=torch.uint8))
    assert view.dtype == torch.uint8 and view.shape == x.shape
    assert (view != x).float().mean() > 0.05


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_methods_search_space_yields_complete_valid_configs(method):
    spec = StudySpec(methods=(method,), recipe=Recipe(epochs=2))
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    for _ in range(3):
        trial = study.ask()
        config = DefineByRun(spec, declarations())(trial)
        parsed = TrialConfig.from_dict(config, declarations())
        assert parsed.method == method and parsed.recipe.epochs == 2
        assert parsed.to_dict() == config  # resolved already: every declared name, typed
        for hparam in METHODS[method].hparams:
            if hparam.searched and hparam.kind in (float, int):
                low, high = hparam.search
                assert low <= config[hparam.name] <= high


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_smoke_trial_per_method_on_digits(method, digits, tmp_path_factory):
    from kdtune.teacher import get_teacher
    from kdtune.trainable import TrialContext, run_trial

    cache = tmp_path_factory.getbasetemp() / "method_teachers"
    teacher = get_teacher(
        digits, "cnn", Recipe(epochs=2), seed=0, cache_dir=cache, log=lambda _: None
    )
    reports = []
    context = TrialContext(data=digits, teacher=teacher, student_model="mlp", device="cpu")
    run_trial({"method": method, "epochs": 2, "seed": 0}, context, lambda m, s: reports.append(m))
    first, final = reports
    assert math.isfinite(final["train_loss"]) and math.isfinite(final["val_nll"])
    assert 0 <= final["val_acc"] <= 1 and "test_ece_ts" in final
    if "warmup" not in METHODS[method].defaults:  # a warm-up raises the loss's weight each epoch
        assert final["train_loss"] < first["train_loss"]


def _recording_teacher(calls: list[torch.Tensor]):
    weights = torch.randn(3 * 4 * 4, 5)

    def teacher(x):
        calls.append(x)
        return x.flatten(1) @ weights

    return teacher


@pytest.mark.parametrize("augmentation", ["flip", "identity"])
def test_da_kd_shows_the_teacher_the_named_augmentation_of_the_batch(augmentation):
    torch.manual_seed(0)
    calls: list[torch.Tensor] = []
    x = torch.randn(6, 3, 4, 4)
    batch = StepBatch(x, torch.arange(6) % 5, 5, raw=x, normalize=lambda v: v, fill=torch.zeros(3))
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    params = {**METHODS["da_kd"].defaults, "augmentation": augmentation}
    METHODS["da_kd"].step(student, _recording_teacher(calls), batch, params)
    assert torch.equal(calls[0], x)  # KD on the original batch ...
    # ... and on x': the official flip mirrors the whole batch or none of it
    expected = (x, x.flip(3)) if augmentation == "flip" else (x,)
    assert any(torch.equal(calls[-1], e) for e in expected)


def test_mixup_alone_is_ce_on_mixed_inputs_and_labels_without_a_teacher():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 4, 4), torch.arange(8) % 5
    batch = StepBatch(x, y, 5, raw=x, normalize=lambda v: v, fill=torch.zeros(3))
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 5))
    params = {"alpha": 1.0, "partial": 1.0}
    torch.manual_seed(1)
    loss = METHODS["mixup"].step(student, None, batch, params)
    torch.manual_seed(1)  # the same draw of lambda and partners, by hand
    lam = torch.distributions.Beta(1.0, 1.0).sample((8,))
    partner = torch.randperm(8)
    mixed = lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[partner]
    log_p = student(mixed).log_softmax(1)
    expected = -(lam * log_p[torch.arange(8), y] + (1 - lam) * log_p[torch.arange(8), y[partner]])
    assert not METHODS["mixup"].uses_teacher
    assert loss.item() == pytest.approx(expected.mean().item(), rel=1e-5)


@pytest.mark.parametrize("method", ["da_kd", "cutmix_kd", "crld"])
def test_the_student_sees_each_view_in_a_pass_of_its_own(method):
    """As the official code does: a pass on cat([x, x']) would normalise each view with the
    BatchNorm statistics of both. Each student pass holds one view: B rows, not 2B."""
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, 4)
    batch = StepBatch(x, torch.arange(6) % 5, 5, raw=x, normalize=lambda v: v.float(),
                      fill=torch.zeros(3))  # fmt: skip
    network = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Flatten(),
                                  torch.nn.Linear(48, 5)).train()  # fmt: skip
    sizes: list[int] = []

    def student(v: torch.Tensor) -> torch.Tensor:
        sizes.append(len(v))
        return network(v)

    METHODS[method].step(student, _recording_teacher([]), batch, METHODS[method].defaults)
    assert sizes == [6, 6]
