"""docs/architecture.md's import rules, checked on the source: its layer table places every
module, layers only import downwards, each layer's third-party column names what its modules
import, and MLflow, Optuna and Ray stay in the modules that own them."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdtune"


def _layer_table() -> list[tuple[set[str], set[str]]]:
    """docs/architecture.md's layer table, top down: (modules, third-party libraries) a row.
    The libraries are the column's names, less what parentheses say of them."""
    rows = []
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if len(cells) != 4 or not re.fullmatch(r"\d+ .+", cells[0]):
            continue
        modules = set(re.findall(r"`(\w+)`", cells[1]))
        named = re.sub(r"\([^)]*\)", "", cells[3])
        libraries = {part.split()[0] for part in re.split(r",| and ", named) if part.strip()}
        rows.append((modules, libraries))
    return rows


LAYERS = [modules for modules, _ in _layer_table()]
OWNERS = {"mlflow": {"tracking"}, "optuna": {"search", "searchers", "importance"},
          "ray": {"trainable", "simulate", "reports", "callback", "searchers", "scheduler",
                  "cluster", "runner", "study"}}  # fmt: skip


def _layer(module: str) -> int:
    return next(i for i, members in enumerate(LAYERS) if module in members)


def _imports(path: Path) -> set[str]:
    """Top-level names of everything the module imports, at any depth (also inside functions),
    except what only type checkers read."""
    tree = ast.parse(path.read_text())
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and ast.unparse(block.test) == "TYPE_CHECKING"
                 for node in ast.walk(block)}  # fmt: skip
    names = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _kdtune_modules(names: set[str]) -> set[str]:
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "kdtune" and len(parts) > 1 and (PACKAGE / f"{parts[1]}.py").exists():
            found.add(parts[1])
    return found


def test_every_module_is_placed_in_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert modules == set().union(*LAYERS)


def test_modules_import_only_from_their_own_layer_or_below():
    for path in PACKAGE.glob("*.py"):
        if path.stem == "__init__":
            continue
        for dependency in _kdtune_modules(_imports(path)):
            assert _layer(dependency) <= _layer(path.stem), f"{path.stem} imports {dependency}"


def test_mlflow_optuna_and_ray_stay_in_their_modules():
    for path in PACKAGE.glob("*.py"):
        roots = {name.split(".")[0] for name in _imports(path)}
        for library, owners in OWNERS.items():
            if library in roots:
                assert path.stem in owners, f"{path.stem} imports {library}"


def _third_party(path: Path) -> set[str]:
    roots = {name.split(".")[0] for name in _imports(path)}
    return roots - set(sys.stdlib_module_names) - {"kdtune", "__future__"}


def test_each_layers_third_party_column_names_what_its_modules_import():
    for modules, libraries in _layer_table():
        imported = set().union(*(_third_party(PACKAGE / f"{m}.py") for m in modules))
        assert imported == libraries, f"{sorted(modules)}: import {sorted(imported)}"


def test_every_tune_hook_kdtune_defines_is_one_tune_calls():
    """A hook Tune never calls is dead code that a hand-called test can hide (the progress line
    sat in `on_step`, which Ray Tune 2.60's Callback does not have): each `on_*` method of
    kdtune's callback, scheduler and searchers must be one their Tune base class declares."""
    from ray.tune import Callback
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import Searcher

    from kdtune.callback import TrackingCallback
    from kdtune.scheduler import MultiObjectiveAsha, SnapshotOnChange
    from kdtune.searchers import OptunaSearcher, PointsSearcher

    for ours, tunes in [(TrackingCallback, Callback), (MultiObjectiveAsha, FIFOScheduler),
                        (SnapshotOnChange, FIFOScheduler), (OptunaSearcher, Searcher),
                        (PointsSearcher, Searcher)]:  # fmt: skip
        hooks = {name for name in vars(ours) if name.startswith("on_")}
        assert hooks, ours
        assert hooks <= set(dir(tunes)), (ours.__name__, sorted(hooks - set(dir(tunes))))
