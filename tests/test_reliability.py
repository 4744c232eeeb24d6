"""Issue 7: bad input gets one clean error, a diverging trial fails alone, nothing is lost."""

from __future__ import annotations

import dataclasses
import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from kdtune.config import ConfigError, Recipe, StudySpec


def _smoke_spec(tmp_path, **changes) -> StudySpec:
    import studies.temperature_sweep as study

    return dataclasses.replace(study.SMOKE, storage_path=str(tmp_path / "ray_results"), **changes)


def test_diverging_trials_fail_with_their_reason_and_the_study_completes(ray_local, tmp_path):
    from kdtune.study import run_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = _smoke_spec(tmp_path, methods=("kd",), max_failures=0,
                       recipe=Recipe(epochs=2, lr=1e6))  # fmt: skip
    result = run_study(spec, tracking_uri=uri, log=lambda _: None)
    rows = result.table.to_pylist()
    assert len(rows) == spec.num_samples
    assert all(r["status"] == "ERROR" and "non-finite loss" in r["error"] for r in rows)
    assert result.front.num_rows == 0
    client = MlflowClient(uri)
    for row in rows:
        run = client.get_run(row["mlflow_run_id"])
        assert run.info.status == "FAILED" and "non-finite loss" in run.data.tags["failure"]
        assert run.data.tags["pareto"] == "false"


def test_unwritable_storage_is_a_clean_error_before_anything_starts(tmp_path):
    from kdtune.study import run_study

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    spec = dataclasses.replace(_smoke_spec(tmp_path), storage_path=str(blocker / "results"))
    with pytest.raises(ConfigError, match="storage_path: cannot write"):
        run_study(spec, log=lambda _: None)


SPEC_KEYS = [f.name for f in dataclasses.fields(StudySpec)]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=8))  # fmt: skip
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(
    st.sampled_from(["epochs", "lr", "temperature", "x"]), scalars, max_size=2))  # fmt: skip
keys = st.one_of(st.sampled_from(SPEC_KEYS), st.text(string.ascii_lowercase + "_", max_size=12))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, values, max_size=5))
def test_spec_loader_gives_a_valid_spec_or_one_clean_error(raw):
    try:
        spec = StudySpec.from_dict(raw)
    except ConfigError as error:
        assert "\n" not in str(error) and len(str(error)) < 400
    else:
        assert isinstance(spec, StudySpec)


def test_environment_secrets_are_never_logged(ray_local, tmp_path, monkeypatch):
    from kdtune.study import run_study

    monkeypatch.setenv("KDTUNE_TEST_SECRET", "s3cr3t-token-value")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_study(_smoke_spec(tmp_path, num_samples=1), tracking_uri=uri, log=lambda _: None)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id])
    for run in runs:
        logged = {**run.data.params, **run.data.tags}
        assert not any("s3cr3t" in str(v) for v in logged.values())
    assert os.environ["KDTUNE_TEST_SECRET"]  # it was visible to the study


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    from kdtune.atomic import atomic_path, write_text

    target = tmp_path / "results.txt"
    write_text(target, "complete old content")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_text("half of the new")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "complete old content"
    assert [p.name for p in tmp_path.iterdir()] == ["results.txt"]  # no temp file left behind
