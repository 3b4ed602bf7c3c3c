"""The tree stays lint-clean (ruff, rules in pyproject.toml), so a stray unused import fails CI, not review."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff not installed (it is in the dev extra)")
    out = subprocess.run([ruff, "check", "src", "tests", "components", "pipelines"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
