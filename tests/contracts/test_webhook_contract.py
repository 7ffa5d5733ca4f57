"""The webhook outbox contract (``otpguard.stores.webhooks.WebhookStore``), run against
every backend in ``conftest.STORE_URLS``. Time is passed as ``now``; nothing sleeps."""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from typing import Any

import pytest

from otpguard.stores import Store, store_from_url
from otpguard.stores.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookStore,
)

from .conftest import SHARED_STORE_URLS

T0 = 1_800_000_000.0
BATCH_MODULES = {
    "SQLiteStore": "otpguard.stores.sqlite",
    "PostgresStore": "otpguard.stores.postgres",
    "RedisStore": "otpguard.stores.webhooks_redis",
}


def ws(store: Store) -> WebhookStore:
    assert isinstance(store, WebhookStore)
    return store


def row(n: int, *, endpoint: str = "we_1", at: float = T0) -> WebhookDelivery:
    return WebhookDelivery(
        id=f"{int(at * 1000) + n:013x}000000000000.{endpoint}",
        endpoint_id=endpoint,
        event_type="started",
        payload=f'{{"id":"x{n}","type":"started"}}',
        created_at=at,
        next_at=at,
    )


async def test_endpoints_one_per_scope(store: Store) -> None:
    s = ws(store)
    await s.put_webhook_endpoint(
        WebhookEndpoint("we_a", "key:k1", "https://a.example/h", "kid", T0)
    )
    await s.put_webhook_endpoint(
        WebhookEndpoint("we_b", "key:k2", "https://b.example/h", "kid", T0)
    )
    await s.put_webhook_endpoint(
        WebhookEndpoint("we_a", "key:k1", "https://c.example/h", "kid", T0)
    )
    endpoints = await s.list_webhook_endpoints()
    assert [(e.scope, e.id, e.url) for e in endpoints] == [
        ("key:k1", "we_a", "https://c.example/h"),
        ("key:k2", "we_b", "https://b.example/h"),
    ]
    assert await s.delete_webhook_endpoint("key:k2") is True
    assert await s.delete_webhook_endpoint("key:k2") is False
    assert [e.scope for e in await s.list_webhook_endpoints()] == ["key:k1"]


async def test_enqueue_is_idempotent_and_capped_per_endpoint(store: Store) -> None:
    s = ws(store)
    assert await s.enqueue_webhooks([row(1), row(2), row(1)], max_pending=10) == 2
    assert await s.enqueue_webhooks([row(3), row(4)], max_pending=3) == 1
    assert await s.enqueue_webhooks([row(5, endpoint="we_2")], max_pending=3) == 1
    listed = await s.list_webhook_deliveries(limit=10)
    assert [d.id for d in listed] == sorted((d.id for d in listed), reverse=True)
    assert len(listed) == 4
    assert {d.status for d in listed} == {PENDING}
    assert len(await s.list_webhook_deliveries(endpoint_id="we_2")) == 1


@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_concurrent_enqueues_never_pass_the_cap(store: Store, store_url: str) -> None:
    """Many writers at once, each on its own connection (a second store on the same URL
    joins in): the pending cap per endpoint is exact, decided with the insert."""
    other = store_from_url(store_url)
    await other.open()
    try:
        writers = [ws(store), ws(other)]
        added = await asyncio.gather(
            *(writers[n % 2].enqueue_webhooks([row(n)], max_pending=7) for n in range(60))
        )
    finally:
        await other.aclose()
    assert sum(added) == 7
    assert len(await ws(store).list_webhook_deliveries(limit=100)) == 7


async def test_claim_takes_due_rows_once_and_finish_needs_the_lease(store: Store) -> None:
    s = ws(store)
    await s.enqueue_webhooks([row(1), row(2), row(3, at=T0 + 100)], max_pending=10)
    claimed = await s.claim_webhooks(T0 + 1, 10, "lease-a", T0 + 40)
    assert [d.id for d in claimed] == [row(1).id, row(2).id]
    assert all(d.attempts == 1 and d.lease == "lease-a" for d in claimed)
    assert claimed[0].payload == row(1).payload
    assert await s.claim_webhooks(T0 + 1, 10, "lease-b", T0 + 40) == []  # held
    attempt = WebhookAttempt(T0 + 2, 500, 12, "HTTP 500")
    assert not await s.finish_webhook(row(1).id, "lease-b", attempt, PENDING, T0 + 20, 8)
    assert await s.finish_webhook(row(1).id, "lease-a", attempt, PENDING, T0 + 20, 8)
    assert not await s.finish_webhook(row(1).id, "lease-a", attempt, PENDING, T0 + 20, 8)
    ok = WebhookAttempt(T0 + 3, 200, 5)
    assert await s.finish_webhook(row(2).id, "lease-a", ok, DELIVERED, T0 + 3, 8)
    # The retry comes due at T0 + 20, not before; the delivered row never again.
    assert await s.claim_webhooks(T0 + 19, 10, "lease-c", T0 + 60) == []
    again = await s.claim_webhooks(T0 + 20, 10, "lease-c", T0 + 60)
    assert [(d.id, d.attempts) for d in again] == [(row(1).id, 2)]
    assert again[0].log == (attempt,)
    done = {d.id: d for d in await s.list_webhook_deliveries()}
    assert done[row(2).id].status == DELIVERED
    assert done[row(2).id].log == (ok,)
    assert done[row(1).id].lease == "lease-c"


async def test_an_expired_lease_lets_another_worker_take_the_row(store: Store) -> None:
    s = ws(store)
    await s.enqueue_webhooks([row(1)], max_pending=10)
    (first,) = await s.claim_webhooks(T0, 10, "dead-worker", T0 + 30)
    (second,) = await s.claim_webhooks(T0 + 30, 10, "live-worker", T0 + 60)
    assert second.attempts == 2
    late = WebhookAttempt(T0 + 31, 200, 1)
    assert not await s.finish_webhook(first.id, "dead-worker", late, DELIVERED, T0 + 31, 8)
    failed = WebhookAttempt(T0 + 32, None, 1, "timeout")
    assert await s.finish_webhook(first.id, "live-worker", failed, FAILED, T0 + 32, 8)
    (d,) = await s.list_webhook_deliveries(status=FAILED)
    assert d.log == (failed,)
    assert await s.claim_webhooks(T0 + 10_000, 10, "x", T0 + 10_030) == []


async def test_log_keeps_the_newest_attempts(store: Store) -> None:
    s = ws(store)
    await s.enqueue_webhooks([row(1)], max_pending=10)
    for i in range(4):
        (d,) = await s.claim_webhooks(T0 + i * 10, 1, f"l{i}", T0 + i * 10 + 5)
        a = WebhookAttempt(T0 + i * 10 + 1, 500 + i, i)
        assert await s.finish_webhook(d.id, f"l{i}", a, PENDING, T0 + (i + 1) * 10, 2)
    (d,) = await s.list_webhook_deliveries()
    assert [a.status_code for a in d.log] == [502, 503]
    assert d.attempts == 4


async def test_finished_rows_free_the_cap_and_purge_removes_old_rows(store: Store) -> None:
    s = ws(store)
    assert await s.enqueue_webhooks([row(1), row(2)], max_pending=2) == 2
    assert await s.enqueue_webhooks([row(3)], max_pending=2) == 0
    (d, _) = await s.claim_webhooks(T0, 10, "l", T0 + 30)
    assert await s.finish_webhook(d.id, "l", WebhookAttempt(T0, 200, 1), DELIVERED, T0, 8)
    assert await s.enqueue_webhooks([row(3, at=T0 + 50)], max_pending=2) == 1
    assert await s.purge_webhooks(T0 + 1) == 2  # both made at T0, delivered or not
    left = await s.list_webhook_deliveries()
    assert [x.id for x in left] == [row(3, at=T0 + 50).id]
    # The purged pending row no longer counts against the cap.
    assert await s.enqueue_webhooks([row(4, at=T0 + 60)], max_pending=2) == 1


async def test_list_pages_newest_first(store: Store) -> None:
    s = ws(store)
    await s.enqueue_webhooks([row(i) for i in range(7)], max_pending=100)
    first = await s.list_webhook_deliveries(limit=3)
    rest = await s.list_webhook_deliveries(before_id=first[-1].id, limit=10)
    ids = [d.id for d in first + rest]
    assert ids == sorted((row(i).id for i in range(7)), reverse=True)


# -- two processes claiming at once ----------------------------------------------------


async def _claim_all(url: str, barrier: Any, name: str) -> list[str]:
    store = store_from_url(url)
    await store.open()
    try:
        barrier.wait(timeout=60)
        got: list[str] = []
        for i in range(40):
            batch = await ws(store).claim_webhooks(T0 + 1, 5, f"{name}{i}", T0 + 1000)
            got += [d.id for d in batch]
        return got
    finally:
        await store.aclose()


def _claimer(url: str, barrier: Any, name: str, queue: Any) -> None:
    queue.put(asyncio.run(_claim_all(url, barrier, name)))


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_two_processes_never_claim_one_row(store: Store, store_url: str) -> None:
    rows = [row(i) for i in range(100)]
    assert await ws(store).enqueue_webhooks(rows, max_pending=1000) == 100
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(store_url, barrier, n, queue)) for n in "ab"]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    claimed = results[0] + results[1]
    assert sorted(claimed) == sorted(r.id for r in rows)  # each exactly once


async def test_purge_goes_batch_by_batch(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each backend deletes in batches (short locks); all the batches together take all."""
    # The backend's webhook module, loaded with its store (no import of other extras here).
    module = sys.modules[BATCH_MODULES[type(store).__name__]]
    monkeypatch.setattr(module, "PURGE_BATCH", 2)
    s = ws(store)
    await s.enqueue_webhooks([row(i) for i in range(5)], max_pending=100)
    await s.enqueue_webhooks([row(9, at=T0 + 10)], max_pending=100)
    assert await s.purge_webhooks(T0 + 5) == 5
    assert [d.id for d in await s.list_webhook_deliveries()] == [row(9, at=T0 + 10).id]
