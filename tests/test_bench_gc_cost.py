"""bench/gc_cost.py runs as its docstring says and measures what it names: both modes
serve every pair, only the tuned one freezes and raises the young threshold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otpguard.web.app import GC_YOUNG

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_gc_bench_compares_the_default_collector_with_the_tuned_one() -> None:
    out = subprocess.run(
        [sys.executable, "bench/gc_cost.py", "--stores", "sqlite", "--pairs", "40",
         "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.splitlines()[-1])
    modes = {r["mode"]: r for r in report["results"]}
    assert set(modes) == {"default", "tuned"}
    for r in modes.values():
        assert r["store"] == "sqlite" and r["valid"] == r["pairs"] == 40
        assert r["cpu_ms_per_pair"] > 0
    assert modes["default"]["threshold"] == [700, 10, 10] and modes["default"]["frozen"] == 0
    assert modes["tuned"]["threshold"][0] == GC_YOUNG and modes["tuned"]["frozen"] > 10_000
    assert "default" in out.stdout and "tuned" in out.stdout  # the table
