"""The SQL stores' rate log (``stores/rate_log.py``): a window counted from each key's
running count ``cum`` in two index probes. The counts must equal a plain count of
the entries through records (in and out of time order), releases and purges, and
must read the same few rows whatever the traffic under the key. Migrations from the
``count(*)`` schemas are in ``test_rate_log_migrations.py``."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from otpguard.models import RateRule
from otpguard.stores import rate_log
from otpguard.stores.sql_store import SQLStore
from otpguard.stores.sqlite import SQLiteStore

from .backends import BackendUnavailable, create_database
from .needs import unavailable

T0 = 1_800_000_000.0
HUGE = 10**9
WINDOWS = (1, 4, 20, 3600)


def postgres_url(purpose: str) -> str:
    try:
        from otpguard.stores import postgres  # noqa: F401 - the extra is installed
    except ImportError as exc:
        unavailable(f"the postgres extra is not installed: {exc}")
    try:
        return create_database(purpose)
    except BackendUnavailable as exc:
        unavailable(str(exc))


async def open_store(kind: str, tmp_path: Path) -> SQLStore:
    if kind == "sqlite":
        store: SQLStore = SQLiteStore(f"sqlite:///{tmp_path / 'rates.db'}")
    else:
        from otpguard.stores.postgres import PostgresStore

        store = PostgresStore(postgres_url("ratelog"))
    await store.open()
    return store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SQLStore]:
    s = await open_store(request.param, tmp_path)
    try:
        yield s
    finally:
        await s.aclose()


async def raw_rows(store: SQLStore) -> list[tuple[str, float, int]]:
    rows = await store._run(lambda cur: cur.all("SELECT key, ts, cum FROM rate_log"))
    return [(str(k), float(ts), int(cum)) for k, ts, cum in rows]


async def assert_consecutive(store: SQLStore) -> None:
    """The invariant the counts stand on: by (ts, cum), each key's cum goes up by one."""
    by_key: dict[str, list[tuple[float, int]]] = {}
    for key, ts, cum in await raw_rows(store):
        by_key.setdefault(key, []).append((ts, cum))
    for key, rows in by_key.items():
        cums = [cum for _, cum in sorted(rows)]
        assert cums == list(range(cums[0], cums[0] + len(cums))), key


async def assert_counts(store: SQLStore, model: dict[str, list[float]], now: float) -> None:
    queries = [(key, w) for key in model for w in WINDOWS]
    expected = [sum(1 for ts in model[key] if ts > now - w) for key, w in queries]
    assert await store.counts(queries, now) == expected


def rule(key: str, limit: int = HUGE, window: int = 3600) -> RateRule:
    return RateRule(f"r-{key}", key, limit, window)


async def test_counts_follow_a_plain_count_through_records_releases_and_purges(
    store: SQLStore,
) -> None:
    """Random records (some behind the newest entry, as from an instance whose clock is
    behind), releases (some of nothing) and purges, checked after every step."""
    rng = random.Random(16)
    model: dict[str, list[float]] = {"a": [], "b": [], "all": []}
    now = T0
    for _ in range(240):
        op, key = rng.random(), rng.choice(["a", "b"])
        if op < 0.55:
            now += rng.choice([0.0, 0.5, 1.0, 3.0])
            at = now - rng.choice([0.0, 0.0, 0.0, 1.0, 2.5, 7.0])
            cost = rng.choice([1, 1, 2])
            decision = await store.hit([rule(key), rule("all"), rule(key, HUGE, 60)], at, cost)
            assert decision.allowed
            for k in (key, "all"):  # one entry per key, however many rules name it
                model[k] += [at] * cost
        elif op < 0.85:
            at = rng.choice(model[key]) if model[key] and op < 0.8 else now - 0.25
            cost = rng.choice([1, 2])
            await store.release([key, "all"], at, cost)
            for k in (key, "all"):
                for _ in range(min(cost, model[k].count(at))):
                    model[k].remove(at)
        else:
            horizon = rng.choice([5, 30])
            await store.purge(now, 3600, horizon, 86400)
            model = {k: [ts for ts in v if ts >= now - horizon] for k, v in model.items()}
        await assert_counts(store, model, now)
        await assert_consecutive(store)


async def test_a_release_in_the_middle_leaves_later_entries_counted(store: SQLStore) -> None:
    """A wrong code's reservation given back after others were recorded under its key:
    the entries before and after it still count, once each."""
    for t in (T0, T0 + 1):
        await store.hit([rule("ip")], t)
    await store.hit([rule("ip")], T0 + 2)  # the reservation...
    for t in (T0 + 2, T0 + 3, T0 + 4):  # ...then more of the same key (one at its ts)
        await store.hit([rule("ip")], t)
    await store.release(["ip"], T0 + 2)  # ...given back
    now = T0 + 4
    assert await store.counts([("ip", w) for w in (1, 2, 3, 4, 10)], now) == [1, 2, 3, 4, 5]
    await assert_consecutive(store)
    # And a full window refuses on the right count, with the right oldest entry.
    decision = await store.hit([rule("ip", limit=5, window=10)], now)
    assert not decision.allowed and decision.count == 5
    assert decision.retry_after == pytest.approx(T0 + 10 - now)
    assert (await store.hit([rule("ip", limit=6, window=10)], now)).allowed
    assert await store.count("ip", 10, now) == 6


async def test_an_entry_behind_the_newest_counts_in_time_order(store: SQLStore) -> None:
    """Another instance's clock a little behind: its entry goes before the newer ones,
    and a window that starts between them counts it out."""
    await store.hit([rule("k")], T0 + 10)
    await store.hit([rule("k")], T0 + 5, cost=2)
    await store.hit([rule("k")], T0 + 12)
    assert await store.counts([("k", 1), ("k", 4), ("k", 8), ("k", 60)], T0 + 12) == [1, 2, 4, 4]
    await store.release(["k"], T0 + 5)
    assert await store.counts([("k", 4), ("k", 8)], T0 + 12) == [2, 3]
    await assert_consecutive(store)


# -- what a count reads -------------------------------------------------------------


def _sqlite_steps(store: SQLiteStore) -> list[int]:
    """A counter of SQLite virtual-machine steps on the store's connection (the work a
    statement does, deterministic: no clock involved)."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    assert store._conn is not None
    store._conn.set_progress_handler(tick, 1)
    return steps


async def test_sqlite_counts_read_as_much_under_50000_entries_as_under_100(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'big.db'}")
    await store.open()
    try:
        await store.hit([rule("big")], T0, cost=50_000)
        await store.hit([rule("small")], T0, cost=100)
        await store.hit([rule("zz")], T0)  # so that each key has another after it
        assert await store.counts([("big", 60), ("small", 60)], T0 + 1) == [50_000, 100]
        work: dict[str, list[int]] = {}
        for key in ("big", "small"):
            steps = _sqlite_steps(store)
            await store.count(key, 60, T0 + 1)
            counted = steps[0]
            await store.hit([rule(key)], T0 + 2)  # counted, then recorded
            recorded = steps[0] - counted
            refused = await store.hit([rule(key, limit=3, window=60)], T0 + 3)
            assert not refused.allowed and refused.retry_after == pytest.approx(57.0)
            work[key] = [counted, recorded, steps[0] - counted - recorded]
        assert work["big"] == work["small"]
        assert store._conn is not None
        sql = "SELECT " + rate_log.count("?", "?")
        plan = store._conn.execute(f"EXPLAIN QUERY PLAN {sql}", ("big", "big", T0)).fetchall()
        details = [str(row[-1]) for row in plan if "rate_log" in str(row[-1])]
        assert len(details) == 2
        assert all("USING COVERING INDEX rate_log_key_ts_cum" in d for d in details), details
    finally:
        await store.aclose()


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


def _rate_log_scans(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        n
        for p in plans
        for n in _plan_nodes(p["Plan"])
        if n.get("Relation Name") == "rate_log" and "Scan" in n["Node Type"]
    ]


@pytest.mark.postgres
async def test_postgres_counts_are_index_probes_of_one_row_under_50000_entries(
    tmp_path: Path,
) -> None:
    """The count statement (``counts``) and every statement inside otpguard_judge's hit
    (auto_explain's plans of the nested statements, with their actual rows): each
    scan of rate_log is an index probe that returns at most one row, and the whole
    reads a handful of pages, with 50 000 entries under the key."""
    import json

    import psycopg

    from otpguard.stores import postgres_sql as q

    store = await open_store("postgres", tmp_path)
    try:
        # 50 000 entries as 50 000 hits would have left them (one call of cost 50 000
        # is one statement whose every row probes for its base: far slower to set up).
        await store._run(
            lambda cur: cur.run(
                "INSERT INTO rate_log (key, ts, cum) "
                "SELECT 'big', ? + g / 100000.0, g FROM generate_series(1, 50000) AS g",
                (T0,),
            )
        )
        assert await store.count("big", 60, T0 + 1) == 50_000
        url = store._conninfo  # type: ignore[attr-defined]  # PostgresStore's own
    finally:
        await store.aclose()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ANALYZE rate_log")
        sql = "SELECT " + rate_log.count("%s", "%s")
        cur = await conn.execute(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", ("big", "big", T0 - 1)
        )
        row = await cur.fetchone()
        assert row is not None
        plans = row[0]
        scans = _rate_log_scans(plans)
        assert len(scans) == 2
        assert all(n["Node Type"] == "Index Only Scan" for n in scans), scans
        assert all(n["Actual Rows"] <= 1 for n in scans), scans
        top = plans[0]["Plan"]
        assert top["Shared Hit Blocks"] + top["Shared Read Blocks"] < 40, top

        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_analyze = on",
            "SET auto_explain.log_buffers = on",
            "SET auto_explain.log_nested_statements = on",
            "SET auto_explain.log_format = 'json'",
            "SET auto_explain.log_level = 'notice'",
        ):
            await conn.execute(setting)
        # And the probes of skip_if_seen: a seen key with entries, and one without.
        seen = [RateRule("seen", "big", HUGE, 60, skip_if_seen=k) for k in ("big", "none")]
        rules = [rule("big"), rule("big", HUGE, 60), *seen]
        params = q.judge_params(rules, (), T0 + 2, 1, lock=True, record=True)
        await conn.execute(q.JUDGE_CALL, params)
    nested = [
        json.loads(m.split("\n", 1)[1]) for m in notices if m.startswith("duration:") and "{" in m
    ]
    nested_scans = _rate_log_scans(nested)
    # the counts' two probes and the seen probe (each once in the plan, run per rule),
    # the base of the new entry (two), the later entries it moves (none)
    assert len(nested_scans) >= 6, nested
    assert all("Index" in n["Node Type"] for n in nested_scans), nested_scans
    assert all(n["Actual Rows"] <= 1 for n in nested_scans), nested_scans
