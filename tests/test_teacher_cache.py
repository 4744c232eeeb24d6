"""Cached teacher logits: same training as the live teacher, Parquet round trip, and refusal
wherever the teacher's inputs are not the batch itself."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdtune.config import ConfigError, Recipe
from kdtune.data import Split
from kdtune.engine import TeacherCacheError, fit, frozen, predict
from kdtune.methods import METHODS
from kdtune.models import build_model
from kdtune.teacher import get_teacher, get_train_logits, train_logits

FIXED = Recipe(epochs=2, augment=False)


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("teachers")
    return get_teacher(digits, "cnn", Recipe(epochs=2), seed=0, cache_dir=cache, log=lambda _: None)


def _student(digits, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", digits.num_classes, digits.in_shape)


def _train(digits, method: str, recipe: Recipe, **teacher_kwargs) -> torch.nn.Module:
    student = _student(digits)
    torch.manual_seed(1)  # the same batch order for both runs
    return fit(student, digits, METHODS[method], METHODS[method].defaults, recipe, **teacher_kwargs)


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_cached_logits_train_the_same_student_as_the_live_teacher(digits, teacher, method):
    model = teacher.build(digits.num_classes, digits.in_shape, torch.device("cpu"))
    live = _train(digits, method, FIXED, teacher=frozen(model))
    cached = _train(digits, method, FIXED, teacher_logits=train_logits(teacher, digits))
    for name, value in live.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n, m in METHODS.items() if m.uses_teacher])
def test_only_methods_declared_cacheable_run_on_cached_logits(digits, teacher, name):
    """The contract behind `teacher_cacheable`: a cacheable method asks the teacher about the
    batch alone; any other method is refused at its first step instead of getting wrong logits."""
    small = dataclasses.replace(digits, train=Split(digits.train.x[:128], digits.train.y[:128]))
    logits = train_logits(teacher, small)
    method = METHODS[name]
    run = lambda: fit(_student(digits), small, method, method.defaults,  # noqa: E731
                      Recipe(epochs=1, augment=False), teacher_logits=logits)  # fmt: skip
    if method.teacher_cacheable:
        run()
    else:
        with pytest.raises(TeacherCacheError, match="cache_teacher_logits = false"):
            run()


def test_cached_logits_are_refused_under_random_augmentation(digits, teacher):
    with pytest.raises(TeacherCacheError, match="augment = false"):
        _train(digits, "kd", Recipe(epochs=1), teacher_logits=train_logits(teacher, digits))


def test_logits_round_trip_through_parquet_keyed_by_sample_index(digits, teacher, tmp_path):
    placed = dataclasses.replace(teacher, path=str(tmp_path / "cnn-digits-key.pt"))
    first = get_train_logits(placed, digits, log=lambda _: None)
    parquet = tmp_path / "cnn-digits-key.train_logits.parquet"
    assert parquet.exists() and first.shape == (len(digits.train), digits.num_classes)

    def must_not_compute(*_args, **_kwargs):
        raise AssertionError("the cached Parquet file should have been read")

    again = get_train_logits(placed, digits, log=lambda _: None, compute=must_not_compute)
    assert torch.equal(again, first)
    model = teacher.build(digits.num_classes, digits.in_shape, torch.device("cpu"))
    row = 17
    with torch.no_grad():
        model.eval()
        direct = model(digits.normalize(digits.train.x[row : row + 1]))[0]
    torch.testing.assert_close(first[row], direct, rtol=1e-4, atol=1e-5)
    fewer = dataclasses.replace(digits, train=Split(digits.train.x[:10], digits.train.y[:10]))
    with pytest.raises(ConfigError, match="does not match the training split"):
        get_train_logits(placed, fewer, log=lambda _: None, compute=must_not_compute)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"recipe": Recipe(epochs=2)}, "recipe.augment = false"),
        ({"methods": ("kd", "mixup_kd")}, "method 'mixup_kd' queries the teacher"),
    ],
)
def test_study_refuses_a_cache_it_cannot_honour(change, message):
    import studies.temperature_sweep as study
    from kdtune.study import validate_spec

    spec = dataclasses.replace(study.SMOKE, methods=("kd",), cache_teacher_logits=True,
                               recipe=FIXED)  # fmt: skip
    validate_spec(spec)
    with pytest.raises(ConfigError, match=f"cache_teacher_logits: .*{message}"):
        validate_spec(dataclasses.replace(spec, **change))


def test_study_with_cached_teacher_logits_end_to_end(ray_local, tmp_path):
    import studies.temperature_sweep as study
    from kdtune.study import run_study

    spec = dataclasses.replace(study.SMOKE, methods=("kd", "ce"), num_samples=2, recipe=FIXED,
                               scheduler="fifo",
                               cache_teacher_logits=True,
                               storage_path=str(tmp_path / "ray"))  # fmt: skip
    result = run_study(spec, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", log=lambda _: None)
    assert list(tmp_path.glob("ray/**/*.train_logits.parquet"))
    assert set(result.table.column("status").to_pylist()) == {"TERMINATED"}
    assert min(result.table.column("test_acc").to_pylist()) > 0.2  # learned something (10 classes)


@pytest.mark.slow
def test_compiled_training_matches_eager(digits):
    eager = _train(digits, "ce", Recipe(epochs=1, augment=False))
    compiled = _train(digits, "ce", Recipe(epochs=1, augment=False, compile=True))
    for name, value in eager.state_dict().items():
        torch.testing.assert_close(compiled.state_dict()[name], value, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fast_path_trains_as_well_as_the_cpu_loop(digits, teacher):
    """bf16 autocast, channels_last and the fused optimiser on CUDA: the same recipe learns as
    well as on CPU, and cached logits computed on the GPU serve a GPU training."""
    cuda = torch.device("cuda")
    on_gpu = digits.to(cuda)
    model = teacher.build(digits.num_classes, digits.in_shape, cuda)
    recipe = Recipe(epochs=5, augment=False)
    on_cpu = teacher.build(digits.num_classes, digits.in_shape, torch.device("cpu"))
    accuracy = {}
    for name, data, kwargs in (
        ("cpu", digits, {"teacher": frozen(on_cpu)}),
        ("cuda", on_gpu, {"teacher": frozen(model)}),
        ("cuda_cached", on_gpu, {"teacher_logits": train_logits(teacher, digits).to(cuda)}),
    ):
        student = _student(digits).to(data.train.x.device)
        torch.manual_seed(1)
        fit(student, data, METHODS["kd"], METHODS["kd"].defaults, recipe, **kwargs)
        logits = predict(student, data.test.x, data.normalize)
        accuracy[name] = (logits.argmax(1) == data.test.y).float().mean().item()
    convolutions = [p for p in model.parameters() if p.dim() == 4]
    assert convolutions and all(p.is_contiguous(memory_format=torch.channels_last)
                                for p in convolutions)  # fmt: skip
    assert accuracy["cuda"] == pytest.approx(accuracy["cpu"], abs=0.03)
    assert accuracy["cuda_cached"] == pytest.approx(accuracy["cpu"], abs=0.03)
