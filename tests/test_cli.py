"""Bad input: exit status 2, one line naming the field, no traceback, before Ray starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--methods", "kd,nope"], "methods: unknown 'nope'"),
        (["--dataset", "mnist"], "dataset: unknown 'mnist'"),
        (["--student", "vit"], "student: unknown 'vit'"),
        (["--num-samples", "0"], "num_samples"),
        (["--lr", "-1"], "lr: must be > 0"),
        (["--objectives", "val_accuracy:max"], "objectives: unknown 'val_accuracy'"),
        (["--dataset", "cifar10", "--data-root", "."], "pass --download"),
        (["--temperature", "2"], "unrecognized arguments"),
        (["--gpus-per-trial", "1"], "gpus_per_trial: 1.0 asked, but this machine has no CUDA GPU"),
        (["--cache-teacher-logits", "--methods", "kd"], "cache_teacher_logits: random crop/flip"),
    ],
)
def test_study_script_rejects_bad_flags(flags, field, tmp_path):
    out = _run([str(ROOT / "studies" / "temperature_sweep.py"), "--smoke-test", *flags], tmp_path)
    assert out.returncode == 2, out.stderr
    assert field in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "ray_results").exists()


def test_kdtune_run_rejects_unknown_spec_key(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "x"\nnum_sample = 3\n')
    out = _run(["-m", "kdtune.cli", "run", str(spec)], tmp_path)
    assert out.returncode == 2 and "did you mean 'num_samples'" in out.stderr
    assert "Traceback" not in out.stderr
