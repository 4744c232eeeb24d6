"""bench/simulated_search.py: the study's own searcher and scheduler replayed on the shipped
blackbox in simulated time. Its event loop against what a Tune run of the same study must
show (concurrency, budgets, rung stops, what Optuna is told), its values against the blackbox
looked up independently, the true and reported hypervolumes by hand; and the chosen TPE
default in force in a real study's searcher."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import studies.temperature_sweep as study
from bench.simulated_search import SearchTrace, simulate_search
from kdtune.blackbox import DEFAULT_PATH, Blackbox
from kdtune.config import TrialConfig
from kdtune.replicates import configuration_key
from kdtune.search import REPLICATED_ATTR, TPE_CONSTANT_LIAR, quiet_optuna, rungs
from kdtune.searchers import make_searcher
from kdtune.simulate import replayed_reports
from kdtune.study import study_declarations

EPOCHS = study.SPEC.recipe.epochs


@pytest.fixture(scope="module")
def box() -> Blackbox:
    quiet_optuna(False)
    return Blackbox.load(DEFAULT_PATH)


def test_fifo_runs_every_trial_its_budget_at_the_concurrency_asked(box):
    spec = dataclasses.replace(study.SPEC, scheduler="fifo", num_samples=6, front_seeds=1)
    trace = simulate_search(spec, box, concurrency=2)
    assert trace.most_running == 2 and len(trace.configs) == 6
    assert trace.full.all() and trace.epochs.tolist() == [EPOCHS] * 6
    # two at a time, all epochs of equal length: trials end in pairs, every 60 trial-epochs
    assert trace.ended_at.tolist() == [60, 60, 120, 120, 180, 180]
    assert trace.total_epochs == 6 * EPOCHS
    one_at_a_time = simulate_search(spec, box, concurrency=1)
    assert one_at_a_time.ended_at.tolist() == [30, 60, 90, 120, 150, 180]
    assert one_at_a_time.configs[:2] == trace.configs[:2]  # the same seed's first asks


def test_each_trial_reports_the_blackbox_and_is_valued_at_its_seed_mean(box):
    spec = dataclasses.replace(study.SPEC, scheduler="fifo", num_samples=4, seed=3, front_seeds=1)
    trace = simulate_search(spec, box)
    declarations = study_declarations(spec)
    for config, reported, true in zip(trace.configs, trace.reported, trace.true):
        last = replayed_reports(config, box, declarations)[-1]
        assert reported.tolist() == [last["val_acc"], last["val_ece"]]
        trial = TrialConfig.from_dict(config, declarations)
        curves = box.true_curve(trial.method, trial.params)
        assert true.tolist() == pytest.approx([curves["val_acc"][-1], curves["val_ece"][-1]])
        assert config["seed"] == 3  # one study, one seed: each config replays one measured seed


def test_moasha_stops_trials_only_at_its_rungs_and_tells_optuna_how_each_ended(box):
    """The default study: 24 searched trials, MO-ASHA judging them, then replicates of its
    full-budget configurations with new seeds, never stopped, never told to Optuna."""
    spec = dataclasses.replace(study.SPEC, num_samples=24)
    trace = simulate_search(spec, box, concurrency=4)
    assert set(trace.epochs.tolist()) <= {*rungs(spec), EPOCHS}
    assert (trace.epochs < EPOCHS).any()  # some were stopped
    assert trace.full.tolist() == (trace.epochs == EPOCHS).tolist()
    assert trace.total_epochs == trace.epochs.sum() and trace.ended_at[-1] == trace.total_epochs
    searched = np.array([c["seed"] == spec.seed for c in trace.configs])
    assert searched.sum() == 24 and 0 < (~searched).sum() <= spec.replicate_trials
    assert trace.full[~searched].all()  # MO-ASHA judges no replicate
    full_keys = {configuration_key(c) for c, f, s in zip(trace.configs, trace.full, searched)
                 if f and s}  # fmt: skip
    replicated = [(configuration_key(c), c["seed"]) for c in np.array(trace.configs)[~searched]]
    assert {key for key, _ in replicated} <= full_keys  # of configurations that ran in full
    assert len(set(replicated)) == len(replicated)  # no seed twice
    assert {seed for _, seed in replicated} <= set(range(1, spec.front_seeds))
    states = [t.state.name for t in trace.study.get_trials()]
    assert states.count("COMPLETE") == trace.full[searched].sum()
    assert states.count("PRUNED") == 24 - trace.full[searched].sum() and len(states) == 24
    assert trace.study.user_attrs[REPLICATED_ATTR] is True  # the search ended, not its driver


def test_the_same_seed_replays_the_same_search_and_another_seed_another(box):
    spec = dataclasses.replace(study.SPEC, num_samples=12)
    first, again = simulate_search(spec, box), simulate_search(spec, box)
    assert first.configs == again.configs and first.final == again.final
    other = simulate_search(dataclasses.replace(spec, seed=1), box)
    assert other.configs != first.configs


def test_true_and_reported_hypervolumes_by_hand():
    # three full trials, maximise accuracy, minimise ECE, reference (0.9, 0.1); the second
    # looked best (its one training was lucky) and pushed the first off the reported front
    trace = SearchTrace(
        configs=[{}, {}, {}], epochs=np.array([4, 4, 2]), ended_at=np.array([4, 8, 10]),
        full=np.array([True, True, False]),
        reported=np.array([[0.95, 0.05], [0.97, 0.03], [0.99, 0.01]]),
        true=np.array([[0.94, 0.05], [0.92, 0.06], [0.99, 0.01]]),
        total_epochs=10, most_running=1, directions=("max", "min"), reference=(0.9, 0.1))
    reported, true = trace.hypervolumes()
    assert reported.tolist() == pytest.approx([0.05 * 0.05, 0.07 * 0.07])
    # after the second, the front holds only it, valued at its seed mean (0.92, 0.06): worse
    assert true.tolist() == pytest.approx([0.04 * 0.05, 0.02 * 0.04])
    assert trace.final == pytest.approx((0.07 * 0.07, 0.02 * 0.04))  # the stopped one not at all
    assert trace.full_ended_at.tolist() == [4, 8]


def test_a_replayed_search_needs_a_reference_point(box):
    with pytest.raises(ValueError, match="reference_point"):
        simulate_search(dataclasses.replace(study.SPEC, reference_point=()), box)


def test_a_real_studys_tpe_has_the_chosen_constant_liar(tmp_path):
    spec = dataclasses.replace(study.SPEC, name="liar")
    searcher = make_searcher(spec, study_declarations(spec), f"sqlite:///{tmp_path / 'o.db'}")
    assert searcher.study.sampler._constant_liar is TPE_CONSTANT_LIAR


def test_a_replay_keeps_clear_of_a_real_study_of_the_same_name(box, tmp_path):
    """MO-ASHA finds its rungs' file by the study's name; a real study run earlier in the same
    process (another test, a notebook) leaves that name pointing into its folder."""
    from kdtune.storage import RUNGS_FILE, for_this_launch

    spec = dataclasses.replace(study.SPEC, num_samples=12)
    alone = simulate_search(spec, box)
    theirs = tmp_path / "scheduler_state.json"
    theirs.write_text('{"rungs": [1], "passed": {}, "recorded": {"1": {}}}')  # other rungs
    for_this_launch(RUNGS_FILE, spec.name, theirs)
    after = simulate_search(spec, box)
    assert after.configs == alone.configs and after.final == alone.final
    assert theirs.read_text() == '{"rungs": [1], "passed": {}, "recorded": {"1": {}}}'
