"""The live progress line of a running study: counts, each running trial's epoch and objectives,
and the time left, computed from the work done since the process began."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest

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


def _on_a_terminal(command: list[str], cwd, timeout: float = 300) -> tuple[int, str]:
    """A command run on a pseudo-terminal, as in tmux: its exit status and all it wrote there."""
    main, child = os.openpty()
    process = subprocess.Popen(command, cwd=cwd, stdin=child, stdout=child, stderr=child,
                               start_new_session=True,
                               env={**os.environ, "TERM": "xterm"})  # fmt: skip
    os.close(child)
    output, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 1.0)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: every writer of the terminal has closed it
                    break
                if not chunk:
                    break
                output += chunk
        return process.wait(timeout=max(deadline - time.monotonic(), 1)), output.decode()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        os.close(main)


BAR = re.compile(r"\r\x1b\[K\[([#-]{20})\] (\d)/2 trials done, (\d) running, (\d) to come")


@pytest.mark.slow
def test_a_study_on_a_terminal_redraws_one_progress_bar(tmp_path):
    """The study script on a pseudo-terminal: a bar redrawn in place while the trials run,
    cleared before each trial's line and at the end, and no `progress:` lines."""
    from tests.helpers.runs import sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out = _on_a_terminal(sweep(tmp_path, "bar", uri, trials=2, epochs=3), tmp_path)
    assert code == 0, out[-3000:]
    bars = BAR.findall(out)
    assert len(bars) >= 2, out[-3000:]
    for filled, done, running, to_come in bars:
        assert int(done) + int(running) + int(to_come) == 2
        assert filled == "#" * (10 * int(done)) + "-" * (20 - 10 * int(done))
    assert any(running == "1" for _, _, running, _ in bars)  # drawn while a trial ran
    for ended in re.finditer(r"trial [12]/2 ", out):  # each trial's line starts a clean line
        assert out[: ended.start()].endswith(("\r\x1b[K", "\n")), out[ended.start() - 200 :]
    rest = out[list(BAR.finditer(out))[-1].end() :]
    cleared = rest.find("\r\x1b[K")  # the last bar is cleared before anything else is written
    assert cleared >= 0 and "\n" not in rest[:cleared], rest[:500]
    assert "progress: " not in out
