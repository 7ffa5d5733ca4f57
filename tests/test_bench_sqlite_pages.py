"""bench/sqlite_pages.py runs as its docstring says and measures what it names: the
baseline file really has SQLite's default pages, the store's own file ``PAGE_SIZE``,
both serve every pair, and the smaller pages write less."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otpguard.stores.sqlite import PAGE_SIZE

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_page_bench_compares_an_earlier_file_with_the_stores_own() -> None:
    out = subprocess.run(
        [sys.executable, "bench/sqlite_pages.py", "--pairs", "60", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.splitlines()[-1])
    by_size = {r["page_size"]: r for r in report["results"]}
    assert set(by_size) == {4096, PAGE_SIZE}
    for r in by_size.values():
        assert r["valid"] == r["pairs"] == 60
        assert r["cpu_ms_per_pair"] > 0 and r["kb_written_per_pair"] > 0
    assert by_size[PAGE_SIZE]["asked"] == "store" and by_size[4096]["asked"] == "4096"
    assert by_size[PAGE_SIZE]["kb_written_per_pair"] < by_size[4096]["kb_written_per_pair"]
    assert "earlier" in out.stdout and "ours" in out.stdout  # the table


def test_rows_are_stored_before_the_pairs() -> None:
    """``--rows``: the engine's own pairs, then copies, until the file holds that many
    verifications; the pairs are measured on top of them."""
    out = subprocess.run(
        [sys.executable, "bench/sqlite_pages.py", "--pairs", "20", "--rounds", "1",
         "--rows", "150"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.splitlines()[-1])
    assert [r["rows"] for r in report["results"]] == [150, 150]
    assert all(r["valid"] == 20 for r in report["results"])
