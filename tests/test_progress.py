"""The live progress line of a running study: counts, each running trial's epoch and objectives,
and the time left, computed from the work done since the process began."""

from __future__ import annotations

import re
from types import SimpleNamespace

from tests.helpers.paced import paced_trials, progress_counts


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


def test_a_logged_study_prints_progress_while_its_trials_run(ray_local, tmp_path, monkeypatch,
                                                             capsys):  # fmt: skip
    """Tune calls the callback between trial events: a study whose trials take seconds says
    where it stands at the log cadence while they run, not only when one ends."""
    from kdtune import callback

    monkeypatch.setattr(callback, "PROGRESS_S", 0.5)
    paced_trials(tmp_path, "paced", epoch_s=1.0)
    out = capsys.readouterr().out
    counts = progress_counts(out)
    assert len(counts) >= 3, out
    assert all(of == done + running + to_come == 2 for done, of, running, to_come in counts)
    assert [c[0] for c in counts] == sorted(c[0] for c in counts)  # done only grows
    both = [line for line in out.splitlines() if line.startswith("progress: 0/2 trials done, 2")]
    assert both and re.search(r"\| \w+ +epoch [1-3]/3 val_acc 0\.5\d00, \w+ +epoch", both[-1])
    assert out.index("progress: ") < out.index("trial 1/2 ")  # said before any trial ended
    assert "\r" not in out and "\033[K" not in out  # a log gets lines, never a redrawn bar

