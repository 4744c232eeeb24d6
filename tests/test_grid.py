"""Grid studies: explicit configurations x seeds instead of a search, and their validation."""

from __future__ import annotations

import json

import pytest

from kdtune import augment
from kdtune.cli import add_study_flags, spec_from_args
from kdtune.config import CHOICES, ConfigError, Recipe, StudySpec
from kdtune.search import grid_keys, grid_points, points_searcher


def _grid_spec(**changes) -> StudySpec:
    grid = ({"method": "ce"}, {"method": "kd", "temperature": 2.0})
    values = dict(methods=("ce", "kd"), grid=grid, seeds=(3, 4), fixed={"w_ce": 0.5},
                  recipe=Recipe(epochs=2))  # fmt: skip
    return StudySpec(**{**values, **changes})


def test_grid_points_run_each_point_per_seed_with_fixed_values_under_the_points_own():
    spec = _grid_spec(fixed={"w_ce": 0.5, "temperature": 9.0})
    points = grid_points(spec)
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


def test_points_searcher_hands_out_points_in_order_and_resumes_where_it_stopped(tmp_path):
    points = [{"method": "ce", "seed": s} for s in range(3)]
    searcher = points_searcher(points)
    assert searcher.suggest("a") == points[0]
    searcher.save(str(tmp_path / "state.json"))
    restored = points_searcher([])
    restored.restore(str(tmp_path / "state.json"))
    assert json.loads((tmp_path / "state.json").read_text())["next_index"] == 1
    assert [restored.suggest(t) for t in "bcd"] == [points[1], points[2], "FINISHED"]


def test_augmentation_choices_name_exactly_the_registry():
    assert CHOICES["augmentation"] == tuple(augment.AUGMENTATIONS)


def _args(spec: StudySpec, argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    add_study_flags(parser, spec)
    return parser.parse_args(argv)


def test_cli_methods_pick_grid_points_and_seeds_set_the_repeats():
    spec = _grid_spec()
    picked = spec_from_args(_args(spec, ["--methods", "kd", "--seeds", "7,8,9"]), spec, spec)
    assert picked.grid == ({"method": "kd", "temperature": 2.0},) and picked.methods == ("kd",)
    assert picked.trial_seeds == (7, 8, 9) and picked.trial_count == 3
    with pytest.raises(ConfigError, match="methods: this study has no configuration of 'dkd'"):
        spec_from_args(_args(spec, ["--methods", "dkd"]), spec, spec)
    search = StudySpec(methods=("kd",))
    assert spec_from_args(_args(search, ["--reseed", "1,2"]), search, search).reseed == (1, 2)


def test_a_hyperparameter_has_one_kind_and_scale_across_all_method_spaces():
    """Optuna refuses a name suggested with two scales in one study (a multi-method search
    failed on it): every space must agree on each name's kind and log scale."""
    from kdtune.search import SPACES, Space

    seen: dict[str, tuple] = {}

    class Recorder:
        def suggest_float(self, name, low, high, log=False):
            return seen.setdefault(name, ("float", log)) == ("float", log) or pytest.fail(name)

        def suggest_int(self, name, low, high):
            return seen.setdefault(name, ("int",)) == ("int",) or pytest.fail(name)

        def suggest_categorical(self, name, options):
            kind = ("choice", tuple(options))
            return seen.setdefault(name, kind) == kind or pytest.fail(name)

    for method, space in SPACES.items():
        space(Space(Recorder(), StudySpec(methods=(method,))))
    assert seen["temperature"] == ("float", True) and seen["w_kd"] == ("float", False)
