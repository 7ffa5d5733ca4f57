"""The Redis store's service records on the wire: each operation, a delete included,
is one round trip, counted by ``bench/roundtrips.py``'s relay (a turn each time the
client speaks after the server did). The behaviour itself is the contract suite's
(tests/contracts/test_services_contract.py, Redis Cluster included)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any
from urllib.parse import urlsplit

import pytest

from otpguard.stores import store_from_url
from otpguard.stores.base import ServiceRecord, Store

from .test_bench_roundtrips import load_bench

pytestmark = pytest.mark.redis

T0 = 1_800_000_000.0
ACCOUNT = "AC" + "a" * 32


@pytest.fixture
async def relayed(redis_url: str) -> AsyncIterator[tuple[Store, Any]]:
    """A store of a prefix of its own on the run's redis-server, through the relay."""
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    relay = load_bench("roundtrips").TurnCounter(parts.hostname, parts.port)
    local = await relay.start()
    url = redis_url.replace(f":{parts.port}", f":{local}", 1)
    store = store_from_url(f"{url}?prefix=og{uuid.uuid4().hex[:12]}")
    await store.open()
    try:
        yield store, relay
    finally:
        await store.aclose()
        await relay.stop()


async def turns(relay: Any, call: Awaitable[Any]) -> tuple[int, Any]:
    relay.turns, relay.active = 0, True
    try:
        result = await call
    finally:
        relay.active = False
    return relay.turns, result


def record(n: int) -> ServiceRecord:
    return ServiceRecord(f"VA{n:032x}", ACCOUNT, f'{{"n":{n}}}', T0 + n)


async def test_each_service_operation_is_one_round_trip(relayed: tuple[Store, Any]) -> None:
    store, relay = relayed
    # Not counted: a process's first service operation looks once whether the flags
    # of before were copied (``_adopt``), and each script's first run loads it.
    assert await store.put_service(record(0), 10)
    assert await store.list_services(ACCOUNT) == [record(0)]
    assert not await store.delete_service(record(9).id)
    one, two = record(1), record(2)
    assert await turns(relay, store.put_service(one, 10)) == (1, True)
    assert await store.put_service(two, 10)
    assert await turns(relay, store.get_service(one.id)) == (1, one)
    assert await turns(relay, store.list_services(ACCOUNT)) == (1, [record(0), one, two])
    # A delete reads the record (its account names the list it leaves) in its script.
    assert await turns(relay, store.delete_service(one.id)) == (1, True)
    assert await turns(relay, store.delete_service(one.id)) == (1, False)
    assert await store.list_services(ACCOUNT) == [record(0), two]
