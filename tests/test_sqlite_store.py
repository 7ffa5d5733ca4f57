"""SQLite-only behaviour (the shared behaviour is in tests/contracts/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from otpguard.errors import ConfigError
from otpguard.stores.sqlite import SQLiteStore


@pytest.mark.parametrize(
    ("query", "mode"), [("", 1), ("?synchronous=full", 2), ("?synchronous=normal", 1)]
)
async def test_synchronous_mode_from_url(tmp_path: Path, query: str, mode: int) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}{query}")
    await store.open()
    try:
        assert store._conn is not None
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == mode
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db?synchronous=off", "sqlite:///x.db?cache=big", "sqlite://x.db"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        SQLiteStore(url)


async def test_a_locked_database_is_waited_for_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    """Another process holds the write lock: the operation waits asynchronously (the
    loop keeps serving), then completes once the lock is released."""
    import asyncio
    import sqlite3

    from otpguard.models import RateRule

    path = tmp_path / "locked.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # what a second worker process mid-write holds
        hit = asyncio.create_task(store.hit([RateRule("r", "k", 5, 60)], 1_800_000_000.0))
        ticks = 0
        for _ in range(50):
            await asyncio.sleep(0)
            ticks += 1
        assert not hit.done()  # still waiting for the lock...
        assert ticks == 50  # ...and the loop kept running meanwhile
        other.execute("ROLLBACK")
        decision = await asyncio.wait_for(hit, timeout=10)
        assert decision.allowed
        assert await store.count("k", 60, 1_800_000_000.0) == 1
    finally:
        other.close()
        await store.aclose()
