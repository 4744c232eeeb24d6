from __future__ import annotations

import numpy as np
import pytest

from kdtune.pareto import hypervolume_2d, pareto_front


def test_front_of_hand_example():
    # (accuracy max, ece min)
    points = np.array(
        [[0.9, 0.05], [0.8, 0.02], [0.85, 0.06], [0.9, 0.05], [0.7, 0.02], [np.nan, 0.0]]
    )
    assert pareto_front(points, ["max", "min"]).tolist() == [True, True, False, True, False, False]


def test_front_matches_brute_force_on_random_points():
    rng = np.random.default_rng(0)
    points = rng.random((60, 3))
    directions = ["max", "min", "min"]
    signs = np.array([-1, 1, 1])
    costs = points * signs
    expected = [
        not any((costs[j] <= costs[i]).all() and (costs[j] < costs[i]).any() for j in range(60))
        for i in range(60)
    ]
    assert pareto_front(points, directions).tolist() == expected


def test_hypervolume_of_hand_example():
    # maximise both; front (1, 3), (2, 2), (3, 1) against reference (0, 0): 3 + 2 + 1 = 6
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
    assert hypervolume_2d(points, ["max", "max"], [0.0, 0.0]) == pytest.approx(6.0)


def test_bad_directions_are_rejected():
    with pytest.raises(ValueError, match="directions"):
        pareto_front(np.zeros((2, 2)), ["max", "up"])


def test_the_reference_point_is_the_specs_else_each_objectives_worst():
    from kdtune.config import StudySpec
    from kdtune.outcome import reference_point

    points = np.array([[0.9, 0.4], [0.8, 0.2]])
    spec = StudySpec(objectives=(("val_acc", "max"), ("test_ece_ts", "min")))
    assert reference_point(spec, points) == [0.0, 1.0]
    fixed = StudySpec(objectives=spec.objectives, reference_point=(0.5, 0.3))
    assert reference_point(fixed, points) == [0.5, 0.3]
    unbounded = StudySpec(objectives=(("val_acc", "max"), ("val_nll", "min")))
    assert reference_point(unbounded, points) == pytest.approx([0.0, 0.44])


def test_a_long_front_fits_mlflows_description_with_a_link_to_the_rest():
    # a big search's front can hold hundreds of runs (duplicated optima); MLflow keeps a tag's
    # first 8,000 characters, and the description is one
    import pyarrow as pa
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    from kdtune.config import StudySpec
    from kdtune.outcome import FRONT_ROWS_SHOWN, description

    rows = [{"run_name": f"kd-temperature={i}", "mlflow_run_id": f"{i:032x}", "status":
             "TERMINATED", "val_acc": 0.98, "val_ece": 0.02, "test_acc": 0.97, "test_ece": 0.03,
             "test_ece_ts": 0.02} for i in range(400)]  # fmt: skip
    table = pa.Table.from_pylist(rows)
    text = description(StudySpec(), "", table, table, [], "7")
    assert len(text) < MAX_TAG_VAL_LENGTH
    assert text.count("#/experiments/7/runs/") == FRONT_ROWS_SHOWN
    assert f"and {400 - FRONT_ROWS_SHOWN} more configurations on [the front]" in text
    assert text.rstrip().endswith("`reliability_test.png`.")  # what follows the table is kept


def test_the_legend_explains_only_the_columns_the_tables_show():
    import pyarrow as pa

    from kdtune.outcome import format_tables
    from kdtune.study import study_declarations
    from kdtune.trainable import BEST_ON_TEST
    from studies.temperature_sweep import SPEC

    row = {"trial_id": "a", "method": "kd", "temperature": 2.0, "val_acc": 0.9, "val_ece": 0.1,
           "test_acc": 0.9, "status": "TERMINATED", "pareto": True}  # fmt: skip
    rows = [row, {**row, "trial_id": "b", "temperature": 4.0}]
    declarations = study_declarations(SPEC)
    without = pa.Table.from_pylist(rows)
    text = format_tables(without, without, declarations, front_title="front")
    assert "temperature:" in text and BEST_ON_TEST not in text
    shown = pa.Table.from_pylist([{**r, BEST_ON_TEST: 0.95} for r in rows])
    assert f"{BEST_ON_TEST}:" in format_tables(shown, shown, declarations, front_title="front")


def test_a_description_over_mlflows_limit_is_cut_at_a_line_and_says_so(tmp_path):
    from mlflow.tracking import MlflowClient
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    from kdtune.tracking import DESCRIPTION_TAG, StudyTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker("long", uri)
    run_id = tracker.start_study("long", {}, {})
    text = "\n".join(f"line {i:05d} " + "x" * 80 for i in range(200))  # 18,000 characters
    tracker.describe_study(text)
    kept = MlflowClient(uri).get_run(run_id).data.tags[DESCRIPTION_TAG]
    assert len(kept) <= MAX_TAG_VAL_LENGTH and kept.endswith("the study's files and log)")
    body = kept.split("\n\n(cut to")[0]
    assert text.startswith(body) and text[len(body)] == "\n"  # cut whole lines
