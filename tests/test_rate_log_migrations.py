"""Upgrading a database whose rate_log was counted with count(*) (SQLite schema 7,
PostgreSQL schema 10) to the running count per key: the same counts as before, and
the windows keep counting right after it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from otpguard.models import RateRule
from otpguard.stores.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from otpguard.stores.sqlite import SQLiteStore

from .test_rate_log import assert_consecutive, postgres_url

T0 = 1_800_000_000.0
# Out of time order, ties at one ts, two keys.
ENTRIES = [("a", T0 + 5), ("a", T0 + 1), ("b", T0 + 2), ("a", T0 + 5), ("a", T0 + 3),
           ("b", T0 + 9), ("a", T0 + 8), ("a", T0 + 1)]  # fmt: skip
QUERIES = [(k, w) for k in ("a", "b") for w in (1, 3, 6, 8, 100)]
NOW = T0 + 9


def plain(entries: list[tuple[str, float]]) -> list[int]:
    return [sum(1 for k, ts in entries if k == key and ts > NOW - w) for key, w in QUERIES]


async def test_sqlite_schema_7_rows_count_the_same_after_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for step in SQLITE_MIGRATIONS[:7]:
        for sql in step:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 7")
    conn.executemany("INSERT INTO rate_log (key, ts) VALUES (?, ?)", ENTRIES)
    conn.execute(  # what schema 7's writers kept beside them
        "INSERT INTO rate_buckets (key, start, n) "
        "SELECT key, CAST(ts / 60 AS INTEGER) * 60, COUNT(*) FROM rate_log GROUP BY 1, 2"
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    try:
        assert await store.counts(QUERIES, NOW) == plain(ENTRIES)
        await assert_consecutive(store)
        await store.hit([RateRule("r", "a", 100, 60)], T0 + 4)
        await store.release(["a"], T0 + 3)
        after = [*ENTRIES, ("a", T0 + 4)]
        after.remove(("a", T0 + 3))
        assert await store.counts(QUERIES, NOW) == plain(after)
        assert store._conn is not None
        tables = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master")}
        assert "rate_buckets" not in tables and "rate_log_key_ts_cum" in tables
    finally:
        await store.aclose()


@pytest.mark.postgres
async def test_postgres_schema_10_rows_count_the_same_after_the_upgrade() -> None:
    import psycopg

    from otpguard.stores.postgres import MIGRATIONS, PostgresStore

    url = postgres_url("ratemig")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for n, step in enumerate(MIGRATIONS[:10], start=1):
            for sql in step:
                await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (n,))
        for key, ts in ENTRIES:
            await conn.execute("INSERT INTO rate_log (key, ts) VALUES (%s, %s)", (key, ts))
        # schema 10's own counting (otpguard_judge's count(*)), before the upgrade
        cur = await conn.execute(
            "SELECT counts FROM otpguard_judge(%s::text[], %s::float8[], %s::int8[], "
            "%s::bool[], %s::text[], 0, %s, false, false, '{}')",
            ([k for k, _ in QUERIES], [NOW - w for _, w in QUERIES], [10**6] * len(QUERIES),
             [True] * len(QUERIES), [None] * len(QUERIES), NOW),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None and list(row[0]) == plain(ENTRIES)
    store = PostgresStore(url)
    await store.open()
    try:
        assert await store.counts(QUERIES, NOW) == plain(ENTRIES)
        decision = await store.hit([RateRule(f"r{w}", k, 10**6, w) for k, w in QUERIES], NOW)
        assert decision.allowed
        await assert_consecutive(store)
        await store.release(["a"], T0 + 5)
        after = [*ENTRIES, ("a", NOW), ("b", NOW)]
        after.remove(("a", T0 + 5))
        assert await store.counts(QUERIES, NOW) == plain(after)
        await assert_consecutive(store)
    finally:
        await store.aclose()
