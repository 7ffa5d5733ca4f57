"""CONTRIBUTING.md's inner loop: every `make` target it names exists and runs what it
says; `make lint` and `make types` are run for real."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TARGETS = re.compile(r"^make (\w+)\s+#", re.MULTILINE)

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(target: str) -> str:
    ran = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True,
                         timeout=30, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_every_documented_target_exists_and_runs_what_it_says() -> None:
    documented = TARGETS.findall((ROOT / "CONTRIBUTING.md").read_text())
    assert documented == ["venv", "format", "lint", "types", "fast", "cov", "test"]
    expected = {
        "venv": "pip install --quiet -e '.[dev]'",
        "format": "ruff format src tests bench examples",
        "lint": "ruff format --check src tests bench examples",
        "types": ".venv/bin/mypy",
        "fast": '-m "not slow and not browser"',
        "cov": "--cov --cov-report=term-missing",
        "test": "./scripts/test.sh",
        "ci": "./.ci/run",
    }
    for target, command in expected.items():
        assert command in _dry_run(target), target


@pytest.mark.slow
@pytest.mark.parametrize("target", ["lint", "types"])
def test_lint_and_types_pass_as_documented(target: str) -> None:
    ran = subprocess.run(["make", target], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=False)  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_the_whole_suite_reports_branch_coverage_of_subprocesses_too() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["coverage"]["run"]
    assert config["branch"] is True
    assert config["source_pkgs"] == ["otpguard"]
    assert "subprocess" in config["patch"]
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert "pytest --cov --cov-report=term" in script
