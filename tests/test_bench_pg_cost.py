"""``bench/pg_cost.py`` runs, and counts one server-side function call per store
operation: a start's admission, each check's opening, a right check's settlement;
``bench/pg_locks.py`` runs and names the locks waited for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_each_request_calls_its_one_function() -> None:
    pairs = 5
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/pg_cost.py"), "-n", str(pairs), "--warmup", "3"],
        capture_output=True, text=True, timeout=180, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    figures = json.loads(next(line for line in lines if line.startswith("{")))
    calls = {name: row[0] for name, row in figures["functions"].items()}
    # One start (otpguard_admit), two checks (otpguard_open_check each), one approval.
    assert calls["otpguard_admit"] == pairs
    assert calls["otpguard_open_check"] == 2 * pairs
    assert calls["otpguard_settle"] == pairs
    assert figures["postgres_cpu_ms"] > 0 and figures["client_cpu_ms"] > 0
    assert any(line.startswith("PostgreSQL CPU per pair") for line in lines)


def test_pg_locks_names_the_keys_backends_wait_for() -> None:
    """``bench/pg_locks.py`` runs a real server under pairs and reports what the
    backends did; every awaited key it names is one the run stored."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/pg_locks.py"), "--duration", "2"],
        capture_output=True, text=True, timeout=240, check=False, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["pairs_per_s"] > 0 and figures["samples"] > 0
    assert figures["backends"] and figures["pool_max_size"] == 10
    assert all(not name.isdigit() for name in figures["awaited_keys"]), figures
