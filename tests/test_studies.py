"""Every study's --smoke-test, in-process, on real Ray Tune, Optuna and a real MLflow store:
it runs, writes its own tables and figures, and puts them on the study's MLflow parent run."""

from __future__ import annotations

import importlib

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient


@pytest.fixture
def smoke(ray_local, tmp_path, monkeypatch):
    """Runs `studies/NAME.py --smoke-test` in a fresh folder; returns what main returned, the
    MLflow client and the study folder."""
    monkeypatch.chdir(tmp_path)  # MLflow's artifacts land in the working folder
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def run(name: str, *flags: str):
        study = importlib.import_module(f"studies.{name}")
        out = study.main(["--smoke-test", "--storage", str(tmp_path / "ray"),
                          "--tracking-uri", uri, *flags])  # fmt: skip
        return out, MlflowClient(uri), tmp_path / "ray" / name

    return run


def _parent_artifacts(client: MlflowClient, experiment: str) -> tuple[set[str], dict]:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.`mlflow.parentRunId` IS NULL")
    assert len(runs) == 1
    return {a.path for a in client.list_artifacts(runs[0].info.run_id)}, runs[0].data.metrics


def _children(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([found.experiment_id])
            if "kdtune.trial_id" in r.data.tags]  # fmt: skip


def test_mixup_kd_study_summarises_each_configuration_over_seeds(smoke):
    summary, client, folder = smoke("mixup_kd")
    assert [e["config"] for e in summary] == ["ce", "kd temperature=2 w_ce=0.2 w_kd=0.8",
                                              "mixup_kd alpha=1"]  # fmt: skip
    assert all(e["n"] == 1 and 0 <= e["test_acc_mean"] <= 1 for e in summary)
    artifacts, _ = _parent_artifacts(client, "mixup_kd")
    assert {"mixup_kd.png", "summary.parquet", "results.parquet"} <= artifacts
    assert pq.read_table(folder / "summary.parquet").num_rows == 3
    assert len(_children(client, "mixup_kd")) == 3


def test_method_zoo_study_runs_each_method_at_its_defaults(smoke):
    summary, client, _ = smoke("method_zoo", "--seeds", "0,1")
    assert [(e["method"], e["n"]) for e in summary] == [("ce", 2), ("dkd", 2)]
    assert summary[0]["test_acc_std"] is not None
    artifacts, _ = _parent_artifacts(client, "method_zoo")
    assert "method_zoo.png" in artifacts
    assert "temperature_tradeoff.png" not in artifacts  # each method at one temperature


def test_augmentation_quality_study_correlates_t_stddev_with_the_students_loss(smoke):
    out, client, _ = smoke("augmentation_quality")
    t_stddev = [e["t_stddev"] for e in out["summary"]]
    assert len(t_stddev) == 3 and all(v > 0 for v in t_stddev) and t_stddev == sorted(t_stddev)
    assert -1 <= out["pearson"] <= 1 and -1 <= out["spearman"] <= 1
    artifacts, metrics = _parent_artifacts(client, "augmentation_quality")
    assert "t_stddev.png" in artifacts and "t_stddev_identity" in metrics
    assert metrics["pearson_t_stddev_vs_test_nll"] == pytest.approx(out["pearson"])


def test_loss_weights_study_reruns_its_front_with_new_seeds(smoke):
    result, client, folder = smoke("loss_weights")
    front = result.front.to_pylist()
    assert front and len(result.seed_front) == len({e["config"] for e in result.seed_front})
    reseeded = _children(client, "loss_weights-reseed")
    assert len(reseeded) == len(front)  # one new seed per front configuration in the smoke test
    assert {int(float(r.data.params["seed"])) for r in reseeded} == {10}
    assert any(e["front"] for e in result.seed_front)
    for entry in result.seed_front:  # the search's own value sits beside the re-run's
        assert entry["search_val_acc"] is not None and entry["val_acc_mean"] is not None
    assert (folder / "front_seeds.parquet").exists()
    artifacts, _ = _parent_artifacts(client, "loss_weights")
    assert "front_seeds.png" in artifacts


def test_self_distillation_study_runs_each_cell_as_a_trial(smoke):
    table, client, folder = smoke("self_distillation_gmm")
    from studies.self_distillation_gmm import SMOKE

    assert table.num_rows == len(SMOKE.points()) == 4
    assert set(table.column("status").to_pylist()) == {"TERMINATED"}
    balanced = [r for r in table.to_pylist() if r["setting"] == "balanced"]
    assert all(r["theory_noiseless_error"] > 0 for r in balanced)
    children = _children(client, "self_distillation_gmm")
    assert len(children) == 4
    history = client.get_metric_history(children[0].info.run_id, "hard_exact_error")
    assert [m.step for m in history] == [0, 1, 2]  # one point per stage
    artifacts, metrics = _parent_artifacts(client, "self_distillation_gmm")
    assert {"sd_error_vs_alpha.png", "sd_bias_fixing.png", "summary.parquet"} <= artifacts
    assert metrics["noiseless_max_abs_gap"] < 0.1


def test_study_scripts_reject_bad_flags_before_ray(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for script, flags, message in [
        ("self_distillation_gmm", ["--theta", "0.7"], "theta: (label-flip probability)"),
        ("method_zoo", ["--methods", "nope"], "no configuration of 'nope'"),
        ("loss_weights", ["--reseed", "1,1"], "reseed: list each seed once"),
    ]:
        out = subprocess.run([sys.executable, str(root / "studies" / f"{script}.py"),
                              "--smoke-test", *flags], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
        assert not (tmp_path / "ray_results").exists()


def test_a_short_recipe_says_that_dkds_warmup_kept_it_below_full_weight():
    """DKD's 20 warm-up epochs are the benchmark's 1/12 of 240; in the 30-epoch digits recipe
    they hold the distillation terms below full weight for epochs 1-19 (the ramp is
    epoch / 20, counted from 1): the study says so and names the scaled value, 30 / 12 -> 2."""
    import dataclasses

    import studies.method_zoo as zoo
    from kdtune.config import Recipe
    from kdtune.study import study_declarations, warmup_notes

    notes = warmup_notes(zoo.SPEC, study_declarations(zoo.SPEC))
    assert len(notes) == 1 and "warmup = 20 of 30 epochs" in notes[0]
    assert "63%" in notes[0] and "--fixed dkd.warmup=2" in notes[0]
    scaled = dataclasses.replace(zoo.SPEC, fixed={"dkd.warmup": 2})
    benchmark = dataclasses.replace(zoo.SPEC, recipe=Recipe(epochs=240))
    assert warmup_notes(scaled, study_declarations(scaled)) == []
    assert warmup_notes(benchmark, study_declarations(benchmark)) == []
