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
        (["--fixed", "temperature=0"], "fixed.temperature: must be > 0"),
        (["--fixed", "w_tckd=1"], "fixed.w_tckd: no method in ['kd', 'mixup_kd']"),
        (["--search", "temperature=4"], "write NAME=LOW:HIGH"),
        (["--seed", "-1"], "seed: must be >= 0"),
        (["--precision", "fp16"], "invalid choice: 'fp16'"),
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


def test_readme_method_tables_are_the_ones_the_declarations_generate():
    from kdtune.cli import methods_markdown

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("<!-- methods:begin") : readme.index("<!-- methods:end -->")]
    assert methods_markdown() in block, "run `kdtune methods --markdown` and paste it"


def test_kdtune_methods_lists_a_methods_hyperparameters_from_its_declarations(tmp_path):
    from kdtune.methods import METHODS

    out = _run(["-m", "kdtune.cli", "methods", "dkd"], tmp_path)
    assert out.returncode == 0
    for hparam in METHODS["dkd"].hparams:
        assert hparam.name in out.stdout and hparam.meaning in out.stdout
    assert "[0.25, 4] log" in out.stdout and "mdistiller CFG.DKD" in out.stdout
    bad = _run(["-m", "kdtune.cli", "methods", "nope"], tmp_path)
    assert bad.returncode == 2 and "method: unknown 'nope'" in bad.stderr
