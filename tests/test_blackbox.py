"""The learning-curve blackbox: the lookup against a hand-made table (log-scale distances, one
method never answering for another, seeds and their mean by hand, errors naming the field), and
the builder's --quick run end to end, resumed, through kdtune's own trial code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kdtune.blackbox import METADATA_KEY, Blackbox, Surrogate, holdout_predictions
from kdtune.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
RECIPE = {
    "epochs": EPOCHS,
    "seeds": [0, 1, 2],
    "space": {
        "kd": [{"name": "temperature", "low": 1.0, "high": 16.0, "log": True},
               {"name": "w_ce", "low": 0.0, "high": 1.0, "log": False}],
        "mixup_kd": [{"name": "temperature", "low": 1.0, "high": 16.0, "log": True},
                     {"name": "w_ce", "low": 0.0, "high": 1.0, "log": False},
                     {"name": "alpha", "low": 0.1, "high": 2.0, "log": True}],
    },
    "constants": {"kd": {"logit_standardize": False}, "mixup_kd": {"partial": 1.0}},
}  # fmt: skip
# final val_acc per seed; the curve rises to it linearly
KD_FINALS = {0: (1.5, 0.5, [0.80, 0.82, 0.84]), 1: (7.5, 0.5, [0.90, 0.93, 0.99])}
MIXUP_FINALS = {7: (4.0, 0.5, 1.0, [0.10, 0.11, 0.12])}


@pytest.fixture
def one_thread():
    """Training as the builder does, on one thread; the session's setting restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rows(method: str, config: int, values: dict[str, float], finals: list[float]) -> list[dict]:
    rows = []
    for seed, final in enumerate(finals):
        for epoch in range(1, EPOCHS + 1):
            rows.append({"method": method, "config": config, "seed": seed, "epoch": epoch,
                         **values, "val_acc": final * epoch / EPOCHS,
                         "val_ece": 0.01 * (seed + 1),
                         # reported only at the last epoch, as test_ece_ts is
                         "test_ece_ts": 0.5 if epoch == EPOCHS else None})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def table_path(tmp_path_factory) -> Path:
    rows = []
    for config, (t, w, finals) in KD_FINALS.items():
        rows += _rows("kd", config, {"temperature": t, "w_ce": w}, finals)
    for config, (t, w, a, finals) in MIXUP_FINALS.items():
        rows += _rows("mixup_kd", config, {"temperature": t, "w_ce": w, "alpha": a}, finals)
    names = list(dict.fromkeys(k for row in rows for k in row))  # kd rows have no alpha
    table = pa.table({name: [row.get(name) for row in rows] for name in names})
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(RECIPE).encode()})
    path = tmp_path_factory.mktemp("blackbox") / "tiny.parquet"
    pq.write_table(table, path)
    return path


def test_nearest_is_measured_in_log_space_where_declared(table_path):
    # T = 4 is nearer 1.5 than 7.5 on a linear scale (2.5 vs 3.5), nearer 7.5 on a log scale
    # (log 4/1.5 = 0.98 vs log 7.5/4 = 0.63): the declared scale decides
    found = Blackbox.load(table_path).query("kd", {"temperature": 4.0, "w_ce": 0.5},
                                            np.random.default_rng(0))  # fmt: skip
    assert found.config == 1 and found.values == {"temperature": 7.5, "w_ce": 0.5}


def test_a_query_never_returns_another_methods_configuration(table_path):
    # the mixup_kd configuration sits exactly at the kd query's temperature and w_ce
    box = Blackbox.load(table_path)
    for seed in range(10):
        found = box.query("kd", {"temperature": 4.0, "w_ce": 0.5}, np.random.default_rng(seed))
        assert found.method == "kd" and found.config in KD_FINALS
        assert found.curve["val_acc"][-1] >= 0.80 and found.true_final["val_acc"] >= 0.80
    mixup = box.query("mixup_kd", {"temperature": 16.0, "w_ce": 0.0, "alpha": 0.1},
                      np.random.default_rng(0))  # fmt: skip
    assert mixup.config == 7 and mixup.curve["val_acc"][-1] <= 0.12


def test_curve_is_one_measured_seed_and_true_value_is_their_mean(table_path):
    box = Blackbox.load(table_path)
    drawn = set()
    for seed in range(30):
        found = box.query("kd", {"temperature": 7.5, "w_ce": 0.5}, np.random.default_rng(seed))
        final = KD_FINALS[1][2][found.seed]
        assert found.distance == 0
        np.testing.assert_allclose(found.curve["val_acc"], [final / 3, final * 2 / 3, final])
        np.testing.assert_allclose(found.curve["val_ece"], 0.01 * (found.seed + 1))
        drawn.add(found.seed)
        # by hand: (0.90 + 0.93 + 0.99) / 3 = 0.94; val_ece (0.01 + 0.02 + 0.03) / 3 = 0.02
        assert found.true_final["val_acc"] == pytest.approx(0.94)
        assert found.true_final["val_ece"] == pytest.approx(0.02)
        np.testing.assert_allclose(found.true_curve["val_acc"], [0.94 / 3, 0.94 * 2 / 3, 0.94])
        # a metric reported only at the last epoch is absent before it
        assert np.isnan(found.curve["test_ece_ts"][:-1]).all()
        assert found.curve["test_ece_ts"][-1] == 0.5
    assert drawn == {0, 1, 2}  # the caller's rng draws among the measured seeds


def test_between_measured_configurations_the_surrogate_weighs_the_nearer_more(table_path):
    box = Blackbox.load(table_path, Surrogate("idw", k=2, power=2))
    means = {c: np.mean(f[2]) for c, f in KD_FINALS.items()}
    near_1 = box.true_curve("kd", {"temperature": 6.0, "w_ce": 0.5})["val_acc"][-1]
    near_0 = box.true_curve("kd", {"temperature": 2.0, "w_ce": 0.5})["val_acc"][-1]
    assert means[0] < near_0 < near_1 < means[1]


@pytest.mark.parametrize("method, query, field", [
    ("dkd", {"temperature": 4.0, "w_ce": 0.5}, "method"),
    ("kd", {"temperature": 4.0}, "kd.w_ce"),
    ("kd", {"temperature": 4.0, "w_ce": 0.5, "alpha": 1.0}, "kd.alpha"),
    ("kd", {"temperature": 32.0, "w_ce": 0.5}, "kd.temperature"),
    ("kd", {"temperature": 4.0, "w_ce": 0.5, "logit_standardize": True}, "kd.logit_standardize"),
])  # fmt: skip
def test_what_the_blackbox_does_not_cover_is_named(table_path, method, query, field):
    box = Blackbox.load(table_path)
    with pytest.raises(ConfigError, match=f"^{field}:"):
        box.query(method, query, np.random.default_rng(0))
    # a constant at the value it was measured at is accepted
    box.query("kd", {"temperature": 4.0, "w_ce": 0.5, "logit_standardize": False},
              np.random.default_rng(0))  # fmt: skip


def test_holdout_predictions_never_see_the_configuration_they_predict(table_path):
    table = Blackbox.load(table_path).tables["kd"]
    predicted, measured = holdout_predictions(table, "val_acc", Surrogate("idw", k=1), folds=5,
                                              rng=np.random.default_rng(0))  # fmt: skip
    # two configurations, each predicted from the other alone
    np.testing.assert_allclose(measured, [0.82, 0.94])
    np.testing.assert_allclose(predicted, [0.94, 0.82])


def test_test_every_epoch_adds_test_curves_and_leaves_training_as_it_was(digits, tmp_path,
                                                                         one_thread):
    from kdtune.config import Recipe
    from kdtune.teacher import get_teacher
    from kdtune.trainable import TrialContext, run_trial

    teacher = get_teacher(digits, "cnn", Recipe(epochs=1), seed=0, cache_dir=tmp_path,
                          log=lambda _: None)  # fmt: skip
    config = {"method": "mixup_kd", "epochs": 2, "seed": 3}
    plain: list[dict] = []
    with_test: list[dict] = []
    for reports, test_every_epoch in ((plain, False), (with_test, True)):
        context = TrialContext(data=digits, teacher=teacher, student_model="mlp", device="cpu",
                               test_every_epoch=test_every_epoch)  # fmt: skip
        run_trial(config, context, lambda m, s, reports=reports: reports.append(m))
    assert "test_acc" not in plain[0] and 0 < with_test[0]["test_acc"] <= 1
    assert [r["val_nll"] for r in plain] == [r["val_nll"] for r in with_test]
    assert plain[-1]["test_acc"] == with_test[-1]["test_acc"]


def _build(out: Path, configs: int, capsys) -> str:
    from bench.blackbox import main

    main(["--quick", "--configs", str(configs), "--seeds", "2", "--epochs", "2", "--out", str(out)])
    return capsys.readouterr().out


def test_quick_build_trains_resumes_and_is_looked_up(tmp_path, capsys, one_thread):
    out = tmp_path / "box" / "digits.parquet"
    first = _build(out, 2, capsys)  # one configuration per method, 2 seeds
    assert "0 trainings held, 4 to run" in first
    second = _build(out, 4, capsys)  # a larger build extends it, skipping what it holds
    assert "4 trainings held, 4 to run" in second and "Fidelity" in second
    table = pq.read_table(out)
    keys = list(zip(*(table.column(k).to_pylist() for k in ("method", "config", "seed", "epoch"))))
    assert len(keys) == len(set(keys)) == 2 * 2 * 2 * 2  # methods x configs x seeds x epochs
    assert all(v is not None for v in table.column("test_acc").to_pylist())  # every epoch
    recipe = json.loads(table.schema.metadata[METADATA_KEY])
    assert recipe["epochs"] == 2 and recipe["seeds"] == [0, 1] and recipe["git_commit"]
    assert recipe["study"]["student"] == "mlp" and recipe["kdtune_version"]
    assert {a["name"]: a["log"] for a in recipe["space"]["mixup_kd"]} == {
        "temperature": True, "w_ce": False, "w_kd": False, "alpha": True}
    # the record goes beside a file that is not the shipped one, never to bench/results
    assert (out.parent / "blackbox-cpu-quick.json").exists()
    assert not (ROOT / "bench" / "results" / "blackbox-cpu-quick.json").exists()
    box = Blackbox.load(out)
    mixup = box.tables["mixup_kd"]
    query = {axis.name: float(v) for axis, v in zip(mixup.axes, mixup.values[1])}
    found = box.query("mixup_kd", query, np.random.default_rng(0))
    assert found.distance == 0 and len(found.curve["val_acc"]) == 2


def test_sobol_points_are_a_prefix_and_uniform_in_log_space_where_declared():
    from bench.blackbox import sobol_points

    axes = RECIPE["space"]["mixup_kd"]
    many = sobol_points(axes, 256, seed=0, stream=1)
    assert sobol_points(axes, 20, seed=0, stream=1) == many[:20]  # a larger build extends
    assert sobol_points(axes, 20, seed=0, stream=0) != many[:20]  # each method its own stream
    temperature = np.array([p["temperature"] for p in many])
    w_ce = np.array([p["w_ce"] for p in many])
    assert temperature.min() >= 1 and temperature.max() <= 16
    # half below the log-scale midpoint (4 = sqrt(1 * 16)), not below the linear one (8.5)
    assert np.mean(temperature < 4.0) == pytest.approx(0.5, abs=0.02)
    assert np.mean(w_ce < 0.5) == pytest.approx(0.5, abs=0.02)
