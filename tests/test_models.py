"""The CIFAR-100 KD model zoo (mdistiller's architectures and state-dict names) and loading the
teachers mdistiller and RepDistiller publish."""

from __future__ import annotations

import hashlib

import pytest
import torch

from kdtune.config import ConfigError
from kdtune.models import MODELS, build_model, load_weights, read_state_dict, sha256_of

CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)

# name: (published parameters in millions, with 100 classes, as the RepDistiller/CRD tables and
# mdistiller's README give them; the exact count of mdistiller's own model code)
PUBLISHED = {
    "resnet8x4": (1.23, 1_233_540),
    "resnet32x4": (7.43, 7_433_860),
    "resnet20": (0.28, 278_324),
    "resnet32": (0.47, 472_756),
    "resnet56": (0.86, 861_620),
    "resnet110": (1.74, 1_736_564),
    "wrn_16_2": (0.70, 703_284),
    "wrn_40_1": (0.57, 569_780),
    "wrn_40_2": (2.26, 2_255_156),
    # published as 3.96M, which truncates; mdistiller's vgg8_bn has 3,965,028, so 3.97M rounded
    "vgg8": (3.97, 3_965_028),
    "vgg13": (9.46, 9_462_180),
    "MobileNetV2": (0.81, 812_836),  # mobile_half: expansion 6, width 0.5
    "ShuffleV1": (0.95, 949_258),
    "ShuffleV2": (1.36, 1_355_528),
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_cifar_model_has_a_published_parameter_count():
    assert set(PUBLISHED) == set(MODELS) - {"mlp", "cnn"}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_the_published_figure(name):
    millions, exact = PUBLISHED[name]
    count = _count(build_model(name, 100, CIFAR))
    assert round(count / 1e6, 2) == millions
    assert count == exact


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_gives_one_logit_per_class_on_cifar_and_on_digits(name):
    torch.manual_seed(0)
    for in_shape, classes in ((CIFAR, 100), (DIGITS, 10)):
        model = build_model(name, classes, in_shape).eval()
        with torch.no_grad():
            logits = model(torch.randn(2, *in_shape))
        assert isinstance(logits, torch.Tensor) and logits.shape == (2, classes)
        assert torch.isfinite(logits).all()


def test_vgg_refuses_images_too_small_for_its_pooling():
    with pytest.raises(ConfigError, match=r"'vgg8' needs images of at least 8x8 .*\(3, 4, 4\)"):
        build_model("vgg8", 10, (3, 4, 4))


def test_resnet_keys_are_mdistillers():
    keys = build_model("resnet8x4", 100, CIFAR).state_dict()
    assert list(keys)[:2] == ["conv1.weight", "bn1.weight"]
    assert "layer1.0.downsample.0.weight" in keys and "layer3.0.bn2.running_var" in keys
    assert keys["fc.weight"].shape == (100, 256)
    assert not any(key.startswith(("features.", "head.")) for key in keys)


def _saved(tmp_path, name: str, content: object) -> str:
    path = tmp_path / name
    torch.save(content, path)
    return str(path)


def test_mdistiller_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    source = build_model("resnet8x4", 100, CIFAR)
    with torch.no_grad():  # running statistics too, or eval mode would not show them lost
        for module in source.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = _saved(tmp_path, "ckpt_epoch_240.pth",
                  {"model": source.state_dict(), "best_acc": 70.0, "epoch": 240})  # fmt: skip
    torch.manual_seed(1)
    loaded = build_model("resnet8x4", 100, CIFAR)
    x = torch.randn(4, *CIFAR)
    with torch.no_grad():
        assert not torch.equal(loaded.eval()(x), source.eval()(x))
        load_weights(loaded, path, "resnet8x4")
        assert torch.equal(loaded.eval()(x), source(x))


def test_a_dataparallel_save_loads(tmp_path):
    torch.manual_seed(0)
    source = build_model("wrn_16_2", 100, CIFAR)
    prefixed = {f"module.{key}": value for key, value in source.state_dict().items()}
    path = _saved(tmp_path, "dp.pth", {"model": prefixed, "epoch": 240})
    loaded = build_model("wrn_16_2", 100, CIFAR)
    load_weights(loaded, path, "wrn_16_2")
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_a_bare_state_dict_without_batch_counters_loads(tmp_path):
    """As saved before PyTorch 0.4.1: BatchNorm has no num_batches_tracked then."""
    source = build_model("resnet20", 100, CIFAR)
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    path = _saved(tmp_path, "old.pth", state)
    assert set(read_state_dict(path)) == set(state)
    load_weights(build_model("resnet20", 100, CIFAR), path, "resnet20")


@pytest.mark.parametrize(
    ("saved_as", "loaded_as", "classes", "problem"),
    [
        ("resnet20", "resnet8x4", 100,
         "shape of conv1.weight is (16, 3, 3, 3) in the file, (32, 3, 3, 3) in resnet8x4"),
        ("resnet8x4", "resnet32x4", 100, "missing key 'layer1.1.conv1.weight'"),
        ("resnet32x4", "resnet8x4", 100, "unexpected key 'layer1.1.conv1.weight'"),
        ("resnet32x4", "resnet32x4", 10,
         "shape of fc.weight is (10, 256) in the file, (100, 256) in resnet32x4"),
    ],
)  # fmt: skip
def test_a_checkpoint_of_another_architecture_is_one_line_naming_the_first_key(
    tmp_path, saved_as, loaded_as, classes, problem
):
    path = _saved(tmp_path, "x.pt", {"model": build_model(saved_as, classes, CIFAR).state_dict()})
    model = build_model(loaded_as, 100, CIFAR)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError) as error:
        load_weights(model, path, loaded_as)
    assert str(error.value) == f"teacher checkpoint {path} does not fit {loaded_as}: {problem}"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_kdtunes_old_resnet_layout_is_refused(tmp_path):
    old = {"features.0.weight": torch.zeros(32, 3, 3, 3), "head.weight": torch.zeros(100, 256)}
    path = _saved(tmp_path, "old-layout.pt", {"state_dict": old})
    with pytest.raises(ConfigError, match="does not fit resnet8x4: missing key 'conv1.weight'$"):
        load_weights(build_model("resnet8x4", 100, CIFAR), path, "resnet8x4")


def test_a_file_that_is_not_a_checkpoint_is_one_line_without_torchs_advice(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                     .to(torch.uint8).numpy().tobytes())  # fmt: skip
    with pytest.raises(ConfigError) as error:
        load_weights(build_model("resnet8x4", 100, CIFAR), path, "resnet8x4")
    message = str(error.value)
    assert message.startswith(f"teacher checkpoint {path} cannot be read (")
    assert "\n" not in message and "weights_only" not in message


def test_a_pickled_object_is_refused_without_running_it(tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ConfigError, match="cannot be read") as error:
        read_state_dict(path)
    assert "weights_only" not in str(error.value)


class _Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('the checkpoint ran code')",))


def test_a_checkpoint_without_weights_or_a_missing_file_is_named(tmp_path):
    path = _saved(tmp_path, "meta.pt", {"epoch": 240, "best_acc": 70.0})
    with pytest.raises(ConfigError, match=r"meta.pt holds no state dict .*\['best_acc', 'epoch'\]"):
        read_state_dict(path)
    with pytest.raises(ConfigError, match="absent.pt does not exist"):
        read_state_dict(tmp_path / "absent.pt")


def test_sha256_of_is_the_files_digest(tmp_path):
    path = tmp_path / "blob"
    content = bytes(range(256)) * 5000  # more than one read
    path.write_bytes(content)
    assert sha256_of(path) == hashlib.sha256(content).hexdigest()
