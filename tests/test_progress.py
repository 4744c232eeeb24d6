"""The live progress line of a running study: counts, each running trial's epoch and objectives,
and the time left, computed from the work done since the process began."""

from __future__ import annotations

from types import SimpleNamespace


def _trial(index: int, status: str, epoch: int) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t{index}", status=status,
                           config={"method": "kd", "epochs": 10},
                           last_result={"epoch": epoch, "val_acc": 0.5})  # fmt: skip


def test_progress_counts_trials_and_estimates_the_time_left(monkeypatch):
    from kdtune import callback

    clock = [100.0]
    monkeypatch.setattr(callback.time, "monotonic", lambda: clock[0])
    progress = callback.Progress(4, ["val_acc"], tty=False)
    # resumed with 15 of 40 epochs done: no rate yet, so no estimate
    first = progress.line([_trial(0, "TERMINATED", 10), _trial(1, "RUNNING", 5)])
    assert first.startswith("progress: 1/4 trials done, 1 running, 2 to come")
    assert "left" not in first
    clock[0] += 10  # 10 more epochs in 10 s: 15 epochs to go take about 15 s
    line = progress.line([_trial(0, "TERMINATED", 10), _trial(1, "RUNNING", 10),
                          _trial(2, "RUNNING", 5)])  # fmt: skip
    assert line.startswith("progress: 1/4 trials done, 2 running, 1 to come")
    assert "t1 kd epoch 10/10 val_acc 0.5000, t2 kd epoch 5/10 val_acc 0.5000" in line
    assert line.endswith("0:10 elapsed, about 0:15 left")


def test_on_a_terminal_progress_is_a_bar(monkeypatch):
    from kdtune import callback

    progress = callback.Progress(4, [], tty=True)
    bar = progress.line([_trial(0, "TERMINATED", 10), _trial(1, "TERMINATED", 10)])
    assert bar.startswith("[" + "#" * 10 + "-" * 10 + "] 2/4 trials done")
