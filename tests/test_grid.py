"""Grid studies: explicit configurations x seeds instead of a search, and their validation."""

from __future__ import annotations

import json

import pytest

from kdtune.cli import add_study_flags, spec_from_args
from kdtune.config import ConfigError, Recipe, StudySpec
from kdtune.methods import declarations
from kdtune.search import grid_keys, grid_points
from kdtune.searchers import PointsSearcher


def _grid_spec(**changes) -> StudySpec:
    grid = ({"method": "ce"}, {"method": "kd", "temperature": 2.0})
    values = dict(methods=("ce", "kd"), grid=grid, seeds=(3, 4), fixed={"w_ce": 0.5},
                  recipe=Recipe(epochs=2))  # fmt: skip
    return StudySpec(**{**values, **changes})


def test_grid_points_run_each_point_per_seed_with_fixed_values_under_the_points_own():
    spec = _grid_spec(fixed={"w_ce": 0.5, "temperature": 9.0})
    points = grid_points(spec, declarations())
    order = [(p["method"], p["seed"]) for p in points]
    assert order == [("ce", 3), ("ce", 4), ("kd", 3), ("kd", 4)]
    assert "w_ce" not in points[0]  # ce has no CE weight to fix
    assert points[2]["w_ce"] == 0.5 and points[2]["temperature"] == 2.0  # the point wins
    assert all(p["epochs"] == 2 for p in points)
    assert spec.trial_count == 4 and grid_keys(spec) == ["method", "temperature"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"grid": (), "seeds": (1, 2)}, "seeds: repeated seeds need a grid"),
        ({"seeds": (1, 1)}, "seeds: list each seed once"),
        ({"search": {"temperature": (1.0, 2.0)}}, "search: a grid study searches nothing"),
        ({"grid": ({"method": "dkd"},)}, r"grid\[0\].method: 'dkd' is not among methods"),
        ({"grid": ({"method": "kd", "seed": 1},)}, r"grid\[0\].seed: give trial seeds once"),
        ({"reseed": (1, 2)}, "reseed: a grid study repeats its points already"),
    ],
)
def test_bad_grids_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        _grid_spec(**changes)


def test_grid_points_are_checked_against_the_methods_before_ray(tmp_path):
    from kdtune.study import validate_spec

    with pytest.raises(ConfigError, match=r"grid\[1\]: temperature: must be > 0"):
        validate_spec(_grid_spec(grid=({"method": "ce"}, {"method": "kd", "temperature": 0.0})))
    with pytest.raises(ConfigError, match=r"grid\[0\]: .*did you mean 'temperature'"):
        validate_spec(_grid_spec(grid=({"method": "kd", "temprature": 2.0},)))


def test_grid_and_seeds_from_a_toml_table():
    spec = StudySpec.from_dict({"methods": ["kd"], "grid": [{"method": "kd", "temperature": 3}],
                                "seeds": [0, 1, 2]})  # fmt: skip
    assert spec.grid == ({"method": "kd", "temperature": 3},) and spec.trial_seeds == (0, 1, 2)
    with pytest.raises(ConfigError, match="grid: must be a list of tables"):
        StudySpec.from_dict({"grid": [{"temperature": 3}]})
    with pytest.raises(ConfigError, match="seeds: must be a list of whole numbers"):
        StudySpec.from_dict({"seeds": [0.5]})


def test_the_points_searcher_hands_out_points_in_order_and_resumes_where_it_stopped(tmp_path):
    points = [{"method": "ce", "seed": s} for s in range(3)]
    searcher = PointsSearcher(points)
    assert searcher.suggest("a") == points[0]
    searcher.save(str(tmp_path / "state.json"))
    restored = PointsSearcher([])
    restored.restore(str(tmp_path / "state.json"))
    assert json.loads((tmp_path / "state.json").read_text())["next_index"] == 1
    assert [restored.suggest(t) for t in "bcd"] == [points[1], points[2], "FINISHED"]




def _args(spec: StudySpec, argv: list[str], smoke: StudySpec | None = None):
    import argparse

    parser = argparse.ArgumentParser()
    add_study_flags(parser, spec, smoke or spec)
    return parser.parse_args(argv)


def test_a_flag_that_is_given_wins_over_the_smoke_tests_values():
    """--epochs 30 with --smoke-test trains 30 epochs even though 30 is the full study's
    default (it used to be taken as "not given" and silently became 2)."""
    import studies.temperature_sweep as study

    def spec_of(*argv: str) -> StudySpec:
        return spec_from_args(_args(study.SPEC, list(argv), study.SMOKE), study.SPEC, study.SMOKE)

    given = spec_of("--smoke-test", "--epochs", "30", "--num-samples", "24", "--lr", "0.05")
    assert (given.recipe.epochs, given.num_samples, given.recipe.lr) == (30, 24, 0.05)
    assert given.teacher_recipe.epochs == study.SMOKE.teacher_recipe.epochs == 2
    smoke = spec_of("--smoke-test")
    assert smoke == study.SMOKE and spec_of() == study.SPEC
    held = spec_of("--fixed", "w_ce=0,dkd.w_nckd=6,topk_scale=true", "--search", "temperature=1:8",
                   "--no-augment", "--precision", "bf16")  # fmt: skip
    assert held.fixed == {"w_ce": 0, "dkd.w_nckd": 6, "topk_scale": True}
    assert held.search == {"temperature": (1.0, 8.0)}
    assert not held.recipe.augment and held.recipe.precision == "bf16"
    assert held.teacher_recipe == study.SPEC.teacher_recipe


def test_cli_methods_pick_grid_points_and_seeds_set_the_repeats():
    spec = _grid_spec()
    picked = spec_from_args(_args(spec, ["--methods", "kd", "--seeds", "7,8,9"]), spec, spec)
    assert picked.grid == ({"method": "kd", "temperature": 2.0},) and picked.methods == ("kd",)
    assert picked.trial_seeds == (7, 8, 9) and picked.trial_count == 3
    with pytest.raises(ConfigError, match="methods: this study has no configuration of 'dkd'"):
        spec_from_args(_args(spec, ["--methods", "dkd"]), spec, spec)
    search = StudySpec(methods=("kd",))
    assert spec_from_args(_args(search, ["--reseed", "5,6"]), search, search).reseed == (5, 6)
    # the seeds the search replicates its front with are not fresh ones for a seed check
    with pytest.raises(ConfigError, match=r"reseed: seeds \[2\] are the search's own replicates"):
        spec_from_args(_args(search, ["--reseed", "2,5"]), search, search)
    assert spec_from_args(_args(search, ["--reseed", "1,2", "--front-seeds", "1"]), search,
                          search).reseed == (1, 2)  # fmt: skip


def test_a_hyperparameter_has_one_kind_and_scale_across_all_methods():
    """One name, one meaning: every method that takes a name declares the same type, valid
    range, meaning and scale (log or linear); only default, source and search range differ."""
    from kdtune.hparams import by_name

    for name, uses in by_name(declarations()).items():
        shapes = {(h.kind, h.low, h.high, h.low_open, h.choices, h.meaning, h.log)
                  for _, h in uses}  # fmt: skip
        assert len(shapes) == 1, (name, [m for m, _ in uses])
    names = by_name(declarations())
    assert names["temperature"][0][1].log and not names["w_kd"][0][1].log


def test_the_sampler_sees_each_methods_hyperparameters_under_its_own_name():
    """A multi-method search: Optuna's names are scoped by method, so TPE never pools kd's and
    lskd's w_kd (different ranges); the trial config uses the plain names, complete."""
    import optuna

    from kdtune.search import DefineByRun

    spec = StudySpec(methods=("kd", "lskd", "dkd"), recipe=Recipe(epochs=2))
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    for _ in range(12):
        trial = study.ask()
        config = DefineByRun(spec, declarations())(trial)
        method = config["method"]
        scoped = {k for k in trial.params if k != "method"}
        assert scoped and all(k.startswith(f"{method}.") for k in scoped)
        for key in scoped:
            assert config[key.split(".", 1)[1]] == trial.params[key]
        assert {h.name for h in declarations()[method]} <= set(config)
        low, high = {"kd": (0.1, 1.0), "lskd": (1.0, 12.0)}.get(method, (None, None))
        if low is not None:
            assert low <= config["w_kd"] <= high
