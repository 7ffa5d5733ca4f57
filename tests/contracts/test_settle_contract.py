"""``Store.settle``: what follows a right code, in one atomic store operation, on every
backend: the approval (exactly once under concurrency, in one process and across
processes), the reservation given back, the events and their counts, the admission
credit, the trusted flag and the approval counters (``stores/settlement.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from otpguard.events import Event, EventType, new_event_id
from otpguard.models import Bucket, RateRule, Status
from otpguard.numberlists import ListEntry
from otpguard.stores import EventQuery, Store
from otpguard.stores.settlement import Settlement

from .conftest import SHARED_STORE_URLS
from .test_store_contract import NUMBER, T0, race_in_processes, stored

NOW = T0 + 10
CAP = RateRule("check_number", "chk:num", 5, 600)
COUNTER = RateRule("conv", "conv:ok:country:GB", 0, 3600, record_only=True)
TRUSTED = ("trusted:newest", "trusted:older")


def bucket(key: str = "adm:settle") -> Bucket:
    # No earned room (share 0): its level alone says how many sends still fit.
    return Bucket(name="country", key=key, base=2, tau=3600.0, share=0.0)


def passed(vid: str) -> Event:
    return Event(type=str(EventType.CHECK_PASSED), ts=NOW, id=new_event_id(NOW),
                 verification_id=vid, number_hash="h1", country="GB")  # fmt: skip


def settlement(vid: str, code_hash: str, **changes: Any) -> Settlement:
    s = Settlement(vid, NOW, code_hash, reserved=[CAP.key], events=[passed(vid)], number=NUMBER,
                   buckets=[bucket()], refund=1, trusted=TRUSTED, trusted_until=NOW + 86400,
                   counters=[COUNTER])  # fmt: skip
    return dataclasses.replace(s, **changes)


async def sends_that_fit(store: Store, b: Bucket) -> int:
    """How many more sends the bucket admits now (it is full afterwards)."""
    n = 0
    while n < 5 and (await store.admit([], [b], NOW)).allowed:
        n += 1
    return n


async def prepared(store: Store, **kwargs: Any) -> tuple[str, str]:
    """A pending verification, two sends in the bucket (full), one reserved wrong code."""
    v = await stored(store, **kwargs)
    for _ in range(2):
        assert (await store.admit([], [bucket()], T0)).allowed
    assert (await store.hit([CAP], NOW)).allowed
    return v.id, v.code_hash


async def test_settle_approves_and_does_the_bookkeeping_in_one_call(store: Store) -> None:
    vid, tag = await prepared(store)
    assert await store.settle(settlement(vid, tag))
    v = await store.get_verification(vid)
    assert v is not None and (v.status, v.updated_at) == (Status.APPROVED, NOW)
    assert await store.count(CAP.key, 600, NOW) == 0  # the reservation given back
    events = await store.list_events(EventQuery(types=(str(EventType.CHECK_PASSED),)))
    assert [e.verification_id for e in events] == [vid]
    counts = await store.list_event_counts(T0, T0 + 60, ("t",))
    assert [(r.kind, r.count) for r in counts] == [("t|check.passed|GB", 1)]
    assert await store.get_flags(TRUSTED, NOW) == {"trusted:newest": "1"}
    assert await store.count(COUNTER.key, 3600, NOW) == 1
    assert await sends_that_fit(store, bucket()) == 1  # refunded one of the two


async def test_settle_of_another_code_changes_nothing(store: Store) -> None:
    vid, tag = await prepared(store)
    for other in ("tag-other", tag[:-1], tag + "x"):
        assert not await store.settle(settlement(vid, other))
    v = await store.get_verification(vid)
    assert v is not None and v.status is Status.PENDING
    assert await store.count(CAP.key, 600, NOW) == 1
    assert await store.list_events(EventQuery()) == []
    assert await store.get_flags(TRUSTED, NOW) == {}
    assert await store.count(COUNTER.key, 3600, NOW) == 0
    assert await sends_that_fit(store, bucket()) == 0


async def test_settle_after_a_kept_resend_approves_with_the_earlier_tags(store: Store) -> None:
    vid, tag = await prepared(store, cooldown=5.0)
    assert await store.replace_code(
        vid, "k1 k2", tag + " tag-new", T0 + 6, T0 + 600, T0 + 36, replaces=tag
    )
    assert await store.settle(settlement(vid, tag))
    v = await store.get_verification(vid)
    assert v is not None and v.status is Status.APPROVED


@pytest.mark.parametrize("status", [Status.APPROVED, Status.CANCELED, Status.EXPIRED])
async def test_settle_of_a_verification_no_longer_pending_is_refused(
    store: Store, status: Status
) -> None:
    vid, tag = await prepared(store, status=status)
    assert not await store.settle(settlement(vid, tag))
    assert await store.count(CAP.key, 600, NOW) == 1


async def test_settle_past_the_expiry_is_refused(store: Store) -> None:
    vid, tag = await prepared(store, ttl=5.0)
    assert not await store.settle(settlement(vid, tag))


async def test_a_number_trusted_under_an_older_key_is_not_credited(store: Store) -> None:
    vid, tag = await prepared(store)
    await store.set_flag("trusted:older", "1", NOW + 60)
    assert await store.settle(settlement(vid, tag))
    assert await sends_that_fit(store, bucket()) == 0  # its sends were not counted
    assert await store.get_flag("trusted:newest", NOW) == "1"  # written under the newest
    assert await store.count(COUNTER.key, 3600, NOW) == 1


async def test_an_allow_listed_number_only_approves_and_records(store: Store) -> None:
    vid, tag = await prepared(store)
    allow = ListEntry(pattern=NUMBER[:6], kind="allow", note='"kind":"block"', created_at=T0)
    await store.put_list_entry(allow, T0, 10)
    assert await store.settle(settlement(vid, tag))
    assert await store.count(CAP.key, 600, NOW) == 0
    assert len(await store.list_events(EventQuery())) == 1
    assert await store.get_flags(TRUSTED, NOW) == {}
    assert await store.count(COUNTER.key, 3600, NOW) == 0
    assert await sends_that_fit(store, bucket()) == 0


async def test_a_block_entry_or_an_expired_allow_entry_settles_as_usual(store: Store) -> None:
    vid, tag = await prepared(store)
    block = ListEntry(pattern=NUMBER, kind="block", note='"kind":"allow"', created_at=T0)
    gone = ListEntry(pattern=NUMBER[:5], kind="allow", created_at=T0, expires_at=NOW - 1)
    await store.put_list_entry(block, T0, 10)
    await store.put_list_entry(gone, T0, 10)
    assert await store.settle(settlement(vid, tag))
    assert await store.get_flag("trusted:newest", NOW) == "1"
    assert await sends_that_fit(store, bucket()) == 1


async def test_without_lists_trust_or_buckets_only_the_approval_and_events(store: Store) -> None:
    vid, tag = await prepared(store)
    plain = settlement(vid, tag, number=None, buckets=(), trusted=(), trusted_until=None,
                       counters=())  # fmt: skip
    assert await store.settle(plain)
    assert await store.count(CAP.key, 600, NOW) == 0
    assert len(await store.list_events(EventQuery())) == 1
    assert await sends_that_fit(store, bucket()) == 0


async def test_concurrent_settles_approve_and_settle_exactly_once(store: Store) -> None:
    vid, tag = await prepared(store)
    # Two more reservations: only one of them is given back.
    for _ in range(2):
        assert (await store.hit([CAP], NOW)).allowed
    results = await asyncio.gather(*(store.settle(settlement(vid, tag)) for _ in range(20)))
    assert sum(results) == 1
    assert await store.count(CAP.key, 600, NOW) == 2
    assert len(await store.list_events(EventQuery())) == 1
    assert await store.count(COUNTER.key, 3600, NOW) == 1
    assert await sends_that_fit(store, bucket()) == 1  # credited once


# -- across processes ----------------------------------------------------------------


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_settles_across_processes_approve_exactly_once(store: Store, store_url: str) -> None:
    vid, tag = await prepared(store)
    outcomes = race_in_processes(store_url, "settle", (vid, tag), processes=3, calls=6)
    assert sum(outcomes) == 1
    assert len(await store.list_events(EventQuery())) == 1
    assert await store.count(COUNTER.key, 3600, NOW) == 1
    assert await sends_that_fit(store, bucket()) == 1


# -- a failing bookkeeping leaves the approval standing ---------------------------------


async def _fail_event_writes(url: str) -> Callable[[], Awaitable[None]]:
    """From now on, storing an event fails inside the store (as a full disk would);
    returns the undo."""
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.execute("CREATE TRIGGER fail BEFORE INSERT ON events "
                         "BEGIN SELECT RAISE(ABORT, 'disk full'); END")  # fmt: skip
        return _nothing
    if url.startswith("postgresql://"):
        import psycopg

        async def sql(*statements: str) -> None:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                for statement in statements:
                    await conn.execute(statement)

        await sql(
            "CREATE FUNCTION fail() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
            "CREATE TRIGGER fail BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION fail()",
        )
        return lambda: sql("DROP TRIGGER fail ON events", "DROP FUNCTION fail()")
    # Redis: the events' id index holds a string, so the script's ZADD fails (WRONGTYPE).
    import redis.asyncio as aioredis

    if url.startswith("redis+cluster"):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        hosts = [h.rpartition(":") for h in url.split("://", 1)[1].split("/", 1)[0].split(",")]
        client: Any = RedisCluster(startup_nodes=[ClusterNode(h, int(p)) for h, _, p in hosts])
    else:
        client = aioredis.from_url(url)
    try:
        await client.set("og:{ev}:id", "not a sorted set")
    finally:
        await client.aclose()
    return _nothing


async def _nothing() -> None:
    return None


# The failure is injected over a second connection, which no in-memory database has.
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_a_failing_bookkeeping_leaves_the_approval_committed(
    store: Store, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    vid, tag = await prepared(store)
    undo = await _fail_event_writes(store_url)
    try:
        with caplog.at_level(logging.WARNING, "otpguard.store"):
            assert await store.settle(settlement(vid, tag))
        assert f"approval of {vid} recorded; its bookkeeping failed" in caplog.messages
        v = await store.get_verification(vid)
        assert v is not None and v.status is Status.APPROVED
        assert not await store.settle(settlement(vid, tag))  # still exactly once
    finally:
        await undo()
