"""docs/architecture.md's import rules, checked on the source: layers only import downwards,
and MLflow, Optuna and Ray stay in the modules that own them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdtune"
LAYERS = [
    {"config", "hparams", "atomic", "storage", "benchmark"},
    {"losses", "metrics", "pareto", "replicates", "results", "plots", "blackbox"},
    {"data", "augment", "models"},
    {"methods", "engine", "teacher", "selfdistill", "trainable", "simulate", "reports"},
    {"tracking", "callback"},
    {"search", "scheduler", "importance", "runner", "outcome", "reseed", "study"},
    {"cli"},
]
OWNERS = {"mlflow": {"tracking"}, "optuna": {"search", "importance"},
          "ray": {"trainable", "simulate", "reports", "callback", "search", "scheduler", "runner",
                  "study"}}  # fmt: skip


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
