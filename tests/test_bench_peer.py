"""``bench/peer.py``: a tiny side-by-side run completes pairs on both servers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .needs import unavailable

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_tiny_run_completes_pairs_on_both_servers(store: str) -> None:
    if shutil.which("wrk") is None:
        unavailable("wrk is not installed (apt-get install wrk)")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench/peer.py"), "--rows", "100", "--duration", "2",
         "--connections", "8", "--stores", store],
        capture_output=True, text=True, timeout=900, check=False, cwd=ROOT,
    )  # fmt: skip
    missing = [ln for ln in done.stderr.splitlines() if ln.startswith("unavailable: ")]
    if done.returncode == 2 and missing:
        unavailable(missing[-1].removeprefix("unavailable: "))
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["connections"] == 8 and figures["duration_s"] == 2
    assert figures["peer_versions"]["django-phone-verify"] == "3.3.0"
    results = {r["server"]: r for r in figures["results"]}
    assert set(results) == {"otpguard", "django-phone-verify"}
    for r in results.values():
        assert (r["store"], r["rows"], r["stored"]) == (store, 100, 100)
        assert r["noop_rps"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
        run = r["pair_run"]
        assert run["valid"] > 0, r  # right-code checks that passed: pairs completed
        assert run["no_code"] == 0, r  # every code reached the driver through the outbox
        # Drivers pick numbers at random from a million: two starts of one number (the
        # later one replaces the earlier) may fail a check now and then, never many.
        assert run["invalid"] + run["refused"] <= max(2, run["valid"] // 20), r
        assert r["pairs_per_s"] > 0
    (ratio,) = figures["ratios"]
    expected = results["otpguard"]["pairs_per_s"] / results["django-phone-verify"]["pairs_per_s"]
    assert (ratio["store"], ratio["rows"]) == (store, 100)
    assert ratio["otpguard_over_peer"] == round(expected, 2)
