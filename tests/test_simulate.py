"""The simulated backend: a study script run with --simulate as a user types it, 16 trials at
once on GPUs declared to a local Ray, recorded whole, every reported value the blackbox
lookup's; what one replayed trial reports; bad `simulate` input as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from kdtune.blackbox import DEFAULT_PATH, METADATA_KEY, Axis, Blackbox
from kdtune.config import Recipe
from kdtune.methods import METHODS
from kdtune.reports import EPOCH_HISTORY, REPORTS, expand, last_report
from kdtune.simulate import replayed_reports

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "studies" / "temperature_sweep.py"
EPOCHS = 30
SEEDS = (0, 1, 2)
CONFIGS = 12  # per method


def _space(method: str) -> list[dict]:
    return [{"name": h.name, "low": float(h.search[0]), "high": float(h.search[1]),
             "log": h.log} for h in METHODS[method].hparams if h.search]  # fmt: skip


def _recipe() -> dict:
    methods = ("kd", "mixup_kd")
    return {"epochs": EPOCHS, "seeds": list(SEEDS),
            "study": {"dataset": "digits", "teacher": "cnn", "student": "mlp"},
            "space": {m: _space(m) for m in methods},
            "constants": {m: {h.name: h.default for h in METHODS[m].hparams if not h.search}
                          for m in methods}}  # fmt: skip


def build_blackbox(path: Path) -> Path:
    """A blackbox of the default study's space, every configuration and seed its own curve (so
    a value tells which one was replayed); test metrics every epoch as the builder records
    them, the *_ts ones only at the last."""
    rng, recipe, rows = np.random.default_rng(0), _recipe(), []
    for m, (method, space) in enumerate(recipe["space"].items()):
        axes = [Axis(a["name"], a["low"], a["high"], a["log"]) for a in space]
        for config in range(CONFIGS):
            values = {a.name: float(a.from_unit(rng.random())) for a in axes}
            final = 0.6 + 0.35 * rng.random()
            for seed in SEEDS:
                for epoch in range(1, EPOCHS + 1):
                    acc = final * (1 - 0.5 ** epoch) + 0.001 * seed + 1e-5 * (m * CONFIGS + config)
                    last = epoch == EPOCHS
                    rows.append({"method": method, "config": config, "seed": seed,
                                 "epoch": epoch, **values, "val_acc": acc,
                                 "val_ece": 0.3 - 0.25 * acc + 0.002 * seed,
                                 "val_nll": 1.5 - acc, "train_loss": 2.0 / epoch,
                                 "train_lr": 0.05 / epoch, "test_acc": acc - 0.01,
                                 "test_ece": 0.31 - 0.25 * acc,
                                 "test_ece_ts": 0.02 + 0.01 * seed if last else None,
                                 "temperature_ts": 1.5 if last else None})  # fmt: skip
    names = list(dict.fromkeys(k for row in rows for k in row))  # kd rows have no alpha
    table = pa.table({name: [row.get(name) for row in rows] for name in names})
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(recipe).encode()}),
                   path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def blackbox_file(tmp_path_factory) -> Path:
    return build_blackbox(tmp_path_factory.mktemp("blackbox") / "tiny.parquet")


def _query(row: dict) -> dict:
    return {h.name: row[h.name] for h in METHODS[row["method"]].hparams}


def test_a_replayed_trial_reports_the_lookups_curve_test_metrics_only_at_the_end(blackbox_file):
    box = Blackbox.load(blackbox_file)
    declarations = {m: METHODS[m].hparams for m in ("kd", "mixup_kd")}
    config = {"method": "mixup_kd", "seed": 5, "temperature": 3.0, "w_ce": 0.2, "w_kd": 0.7,
              "alpha": 0.4, **{k: v for k, v in vars(Recipe(epochs=EPOCHS)).items()}}  # fmt: skip
    reports = replayed_reports(config, box, declarations)
    found = box.query("mixup_kd", _query({**config, "partial": 1.0, "logit_standardize": False}),
                      5)  # fmt: skip
    assert [r["epoch"] for r in reports] == list(range(1, EPOCHS + 1))
    for report in reports:
        index = report["epoch"] - 1
        assert report["val_acc"] == found.curve["val_acc"][index]
        assert report["simulated_config"] == found.config and report["simulated_seed"] == found.seed
        if report["epoch"] < EPOCHS:  # as a real study: nothing measured on test before the end
            assert not any(k.startswith("test_") for k in report) and "temperature_ts" not in report
    assert reports[-1]["test_acc"] == found.curve["test_acc"][-1]
    assert reports[-1]["test_ece_ts"] == found.curve["test_ece_ts"][-1]


def test_a_tune_result_unpacks_to_its_epochs_in_every_form_kdtune_has_sent():
    tune_keys = {"pid": 7, "time_total_s": 1.5}  # Tune's own, added at the top level
    packed = {"epoch": 2, REPORTS: json.dumps([{"epoch": 1, "val_acc": 0.5},
                                               {"epoch": 2, "val_acc": 0.6}]), **tune_keys}
    assert expand(packed) == [{"epoch": 1, "val_acc": 0.5},
                              {"epoch": 2, "val_acc": 0.6, **tune_keys}]  # fmt: skip
    # a result.json line of a study begun by an older kdtune (resumed after an upgrade)
    older = {"epoch": 2, "val_acc": 0.6, EPOCH_HISTORY: json.dumps([{"epoch": 1}]), **tune_keys}
    assert expand(older) == [{"epoch": 1}, {"epoch": 2, "val_acc": 0.6, **tune_keys}]
    plain = {"stage": 1, "student_acc": 0.9}  # the self-distillation study's reports
    assert expand(plain) == [plain] and last_report(plain) == plain
    assert last_report(packed)["val_acc"] == 0.6 and last_report(None) == {}


def test_simulate_alone_names_the_shipped_blackbox_wherever_it_runs(tmp_path, monkeypatch):
    import argparse

    import studies.temperature_sweep as study
    from kdtune.cli import add_study_flags, spec_from_args

    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    add_study_flags(parser, study.SPEC, study.SMOKE)
    spec = spec_from_args(parser.parse_args(["--simulate"]), study.SPEC, study.SMOKE)
    assert spec.simulate == str(DEFAULT_PATH) and DEFAULT_PATH.is_absolute()
    assert DEFAULT_PATH == ROOT / "bench" / "blackbox" / "digits.parquet"
    given = spec_from_args(parser.parse_args(["--simulate", "x.parquet"]), study.SPEC, study.SMOKE)
    assert given.simulate == "x.parquet"
    assert spec_from_args(parser.parse_args([]), study.SPEC, study.SMOKE).simulate == ""


TRIALS, AT_ONCE = 32, 16


@pytest.fixture(scope="module")
def simulated_study(tmp_path_factory, blackbox_file):
    """The study script as a user runs it, in its own process (so its Ray is its own, started
    with the GPUs it declares, whatever Ray this test session runs). Epochs of 0.2 s: at 0.05 s
    a trial stopped at a rung lasted under a second, less than a cold worker takes to start on
    a loaded 2-core machine, and the trials could not be seen side by side."""
    folder = tmp_path_factory.mktemp("simulated")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    command = [sys.executable, str(SCRIPT), "--simulate", str(blackbox_file),
               "--gpus-per-trial", "1", "--max-concurrent-trials", str(AT_ONCE),
               "--num-samples", str(TRIALS), "--simulate-epoch-s", "0.2",
               "--name", "simulated", "--storage", str(folder / "ray"), "--tracking-uri", uri]
    out = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {"out": out.stdout, "uri": uri, "folder": folder / "ray" / "simulated"}


@pytest.mark.slow
def test_a_simulated_study_runs_on_declared_gpus_and_records_every_trial(simulated_study):
    out = simulated_study["out"]
    assert "simulate: replaying" in out and "no training" in out
    assert any(line.startswith("ray: ") and line.endswith(f" CPUs, {AT_ONCE} GPUs")
               for line in out.splitlines())  # the GPUs declared, none on this machine
    rows = pq.read_table(simulated_study["folder"] / "results.parquet").to_pylist()
    # the searched trials, then the replicates of the front's configurations (seeds 1, 2)
    assert sum(r["seed"] == 0 for r in rows) == TRIALS < len(rows) <= TRIALS + 2 * TRIALS // 4
    assert {r["status"] for r in rows} <= {"TERMINATED", "STOPPED"}
    assert any(r["status"] == "TERMINATED" for r in rows)
    # pareto.html: every trial a point, those MO-ASHA stopped hollow, at their stopping epoch
    html = (simulated_study["folder"] / "pareto.html").read_text()
    stopped = [r for r in rows if r["status"] == "STOPPED"]
    assert stopped and f"{len(rows)} trials ({len(stopped)} stopped early, hollow)" in html
    assert html.count('fill="white"') == len(stopped)
    for row in stopped:
        assert f"trial {row['trial_id']}, stopped at epoch {row['stopped_at']}" in html
    tried: dict[str, set] = {}
    for row in rows:
        if row["status"] == "TERMINATED":
            tried.setdefault(row["method"], set()).add(row["temperature"])
    drawn = (simulated_study["folder"] / "temperature_tradeoff.png").exists()
    assert drawn == (max(len(t) for t in tried.values()) >= 3)
    client = MlflowClient(simulated_study["uri"])
    experiment = client.get_experiment_by_name("simulated")
    parent = client.get_run((simulated_study["folder"] / "mlflow_parent_run_id").read_text())
    assert parent.info.status == "FINISHED"
    assert parent.data.params["simulate"].endswith("tiny.parquet")
    assert "Simulated" in parent.data.tags["mlflow.note.content"]
    children = client.search_runs([experiment.experiment_id],
                                  filter_string="tags.`kdtune.trial_id` != ''")  # fmt: skip
    assert sorted(c.data.tags["kdtune.trial_id"] for c in children) == sorted(
        r["trial_id"] for r in rows)
    assert all(c.info.status == "FINISHED" for c in children)
    # trials ran side by side: more at once than the machine's 2 CPUs would let real ones
    spans = [(c.info.start_time, c.info.end_time) for c in children]
    overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert overlap > 2, spans


@pytest.mark.slow
def test_every_reported_value_is_the_blackbox_lookups(simulated_study, blackbox_file):
    box = Blackbox.load(blackbox_file)
    client = MlflowClient(simulated_study["uri"])
    rows = pq.read_table(simulated_study["folder"] / "results.parquet").to_pylist()
    for row in rows:
        found = box.query(row["method"], _query(row), row["seed"])
        assert (row["simulated_config"], row["simulated_seed"]) == (found.config, found.seed)
        reached = row["stopped_at"] or EPOCHS
        assert row["epoch"] == reached
        assert row["val_acc"] == pytest.approx(found.curve["val_acc"][reached - 1], abs=1e-12)
        history = client.get_metric_history(row["mlflow_run_id"], "val_acc")
        assert sorted(m.step for m in history) == list(range(1, reached + 1))
        for metric in history:
            assert metric.value == pytest.approx(found.curve["val_acc"][metric.step - 1],
                                                 abs=1e-12)  # fmt: skip
        if row["status"] == "TERMINATED":
            assert row["test_ece_ts"] == pytest.approx(found.curve["test_ece_ts"][-1])
            assert row["test_acc"] == pytest.approx(found.curve["test_acc"][-1])
        else:
            assert row["test_acc"] is None


# each case in the same fresh interpreter, as `python studies/temperature_sweep.py FLAGS`
_RUN_CASES = """
import contextlib, io, json, os, runpy, sys
import ray
script, cases, root = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
found = []
for i, flags in enumerate(cases):
    folder = os.path.join(root, str(i))
    os.makedirs(folder)
    os.chdir(folder)
    sys.argv = [script, *flags]
    stderr, code = io.StringIO(), 0
    with contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            code = stop.code
    found.append({"code": code, "stderr": stderr.getvalue(), "ray": ray.is_initialized(),
                  "wrote": os.listdir(folder)})
print(json.dumps(found))
"""


def test_bad_simulate_input_is_one_line_before_anything_starts(tmp_path, blackbox_file):
    text = tmp_path / "notes.txt"
    text.write_text("not a blackbox")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1]}), plain)
    box = str(blackbox_file)
    cases = [
        (["--simulate", str(tmp_path / "absent.parquet")], "simulate: no file"),
        (["--simulate", str(text)], "simulate: cannot read"),
        (["--simulate", str(plain)], "simulate: " + str(plain) + ": not a kdtune blackbox"),
        (["--simulate", box, "--methods", "kd,dkd"], "measured kd, mixup_kd, not dkd"),
        (["--simulate", box, "--epochs", "5"], "simulate: " + box + " holds 30-epoch"),
        (["--simulate", box, "--search", "temperature=1:32"],
         "simulate: " + box + " cannot answer for this study: kd.temperature: must be a number "
         "in the measured range [1, 16], got 32.0"),
        (["--simulate", box, "--fixed", "kd.topk_scale=true"], "kd.topk_scale: the blackbox "
         "measured only False"),
        (["--simulate", box, "--objectives", "val_acc:max,val_brier:min"],
         "has no val_brier"),
        (["--simulate", box, "--simulate-epoch-s", "-1"], "simulate_epoch_s: must be >= 0"),
    ]  # fmt: skip
    (tmp_path / "runs").mkdir()
    out = subprocess.run([sys.executable, "-c", _RUN_CASES, str(SCRIPT),
                          json.dumps([flags for flags, _ in cases]), str(tmp_path / "runs")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for (flags, expected), found in zip(cases, json.loads(out.stdout.splitlines()[-1])):
        lines = found["stderr"].strip().splitlines()
        assert found["code"] == 2 and len(lines) == 1, (flags, found["stderr"])
        assert lines[0].startswith("kdtune: error: ") and expected in lines[0], (flags, lines)
        assert not found["ray"] and not found["wrote"], flags


def test_a_spec_files_simulate_must_be_a_path_and_its_epoch_a_duration():
    from kdtune.config import ConfigError, StudySpec

    with pytest.raises(ConfigError, match=r"^simulate: must be str, got 3$"):
        StudySpec.from_dict({"simulate": 3})
    with pytest.raises(ConfigError, match=r"^simulate_epoch_s: must be >= 0"):
        StudySpec.from_dict({"simulate_epoch_s": -0.1})


def test_a_simulation_where_ray_runs_without_gpus_says_so(ray_local, tmp_path, blackbox_file):
    from kdtune.config import ConfigError, StudySpec
    from kdtune.study import run_study

    spec = StudySpec(name="no-gpus", simulate=str(blackbox_file), gpus_per_trial=1,
                     max_concurrent_trials=4, recipe=Recipe(epochs=EPOCHS),
                     storage_path=str(tmp_path / "ray"))  # fmt: skip
    with pytest.raises(ConfigError, match="^simulate: this process started Ray before the study"):
        run_study(spec, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", log=lambda _: None)
