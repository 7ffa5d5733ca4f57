"""A check by id's read, wrong-code reservation and attempt (``Store.open_check``,
``stores/opening.py``): one atomic operation on every backend. Nothing is counted
for an unknown, another key's or a malformed check; a refused reservation counts no
attempt; raced from several processes against a limit of N, exactly N open."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from otpguard.models import AttemptOutcome, RateRule, Status
from otpguard.stores import Store, store_from_url
from otpguard.stores.opening import CheckOpening, Opened

from .conftest import SHARED_STORE_URLS
from .test_store_contract import NUMBER, T0, race_in_processes, stored

IP_KEY = "failed_checks_ip:192.0.2.1"


def opening(vid: str, limit: int = 10, **changes: Any) -> CheckOpening:
    o = CheckOpening(
        verification_id=vid,
        owner=None,
        code_length=6,
        number_rules=(RateRule("failed_checks", "failed_checks:", limit, 3600),),
        ip_rules=(RateRule("failed_checks", IP_KEY, 30, 3600),),
        max_attempts=5,
        now=T0 + 1,
    )
    return dataclasses.replace(o, **changes)


async def counts(store: Store) -> list[int]:
    return await store.counts([(f"failed_checks:{NUMBER}", 3600), (IP_KEY, 3600)], T0 + 2)


async def test_an_opened_check_counts_its_reservation_and_attempt(store: Store) -> None:
    v = await stored(store)
    opened = await store.open_check(opening(v.id))
    assert opened.outcome is Opened.OPENED and opened.refusal is None
    assert opened.ticket is not None and opened.ticket.outcome is AttemptOutcome.COUNTED
    assert opened.ticket.verification.attempts == v.attempts + 1
    assert opened.verification == v  # as read, before the attempt
    assert await counts(store) == [1, 1]
    after = await store.get_verification(v.id)
    assert after == opened.ticket.verification


async def test_unknown_or_another_keys_counts_nothing(store: Store) -> None:
    mine = await stored(store, owner="key-a")
    anyone = await stored(store)
    assert (await store.open_check(opening("VE-nope"))).outcome is Opened.NOT_FOUND
    other = await store.open_check(opening(mine.id, owner="key-b"))
    assert (other.outcome, other.verification) == (Opened.NOT_FOUND, None)
    assert await counts(store) == [0, 0]
    assert await store.get_verification(mine.id) == mine
    assert (await store.open_check(opening(mine.id, owner="key-a"))).outcome is Opened.OPENED
    assert (await store.open_check(opening(anyone.id, owner="key-b"))).outcome is Opened.OPENED


async def test_a_code_of_another_length_counts_nothing(store: Store) -> None:
    v = await stored(store)
    opened = await store.open_check(opening(v.id, code_length=8))
    assert (opened.outcome, opened.verification) == (Opened.MALFORMED, v)
    assert await counts(store) == [0, 0]
    assert await store.get_verification(v.id) == v


async def test_a_refused_reservation_counts_no_attempt(store: Store) -> None:
    v = await stored(store)
    assert (await store.open_check(opening(v.id, limit=1))).outcome is Opened.OPENED
    refused = await store.open_check(opening(v.id, limit=1))
    assert refused.outcome is Opened.REFUSED and refused.refusal is not None
    assert (refused.refusal.rule, refused.refusal.count) == ("failed_checks", 1)
    assert refused.refusal.retry_after > 0 and refused.ticket is None
    assert await counts(store) == [1, 1]
    after = await store.get_verification(v.id)
    assert after is not None and after.attempts == v.attempts + 1


async def test_an_expired_verification_opens_expired(store: Store) -> None:
    v = await stored(store, ttl=1)
    opened = await store.open_check(opening(v.id, now=T0 + 5))
    assert opened.ticket is not None and opened.ticket.outcome is AttemptOutcome.EXPIRED
    assert opened.ticket.verification.status is Status.EXPIRED


async def test_concurrent_checks_open_exactly_the_limit(store: Store) -> None:
    v = await stored(store)
    results = await asyncio.gather(
        *(store.open_check(opening(v.id, limit=3, max_attempts=100)) for _ in range(12))
    )
    assert [r.outcome for r in results].count(Opened.OPENED) == 3
    after = await store.get_verification(v.id)
    assert after is not None and after.attempts == v.attempts + 3


# -- several processes: module-level, so that "spawn" can import them ---------------


async def _race(url: str, vid: str, calls: int, barrier: Any) -> list[str]:
    store = store_from_url(url)
    await store.open()
    try:
        barrier.wait(timeout=60)
        o = opening(vid, limit=7, max_attempts=100)
        results = await asyncio.gather(*(store.open_check(o) for _ in range(calls)))
        return [r.outcome.value for r in results]
    finally:
        await store.aclose()


def _open_worker(url: str, op: str, vid: str, calls: int, barrier: Any, results: Any) -> None:
    try:  # race_in_processes' worker: ``calls`` checks of ``vid``
        results.put(asyncio.run(_race(url, vid, calls, barrier)))
    except BaseException as exc:
        results.put(f"worker failed: {exc!r}")
        raise


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_checks_across_processes_open_exactly_the_limit(store: Store, store_url: str) -> None:
    v = await stored(store)
    outcomes = race_in_processes(store_url, "open", v.id, processes=4, calls=6, worker=_open_worker)
    assert sorted(set(outcomes)) == ["opened", "refused"]
    assert outcomes.count("opened") == 7 and len(outcomes) == 24
    after = await store.get_verification(v.id)
    assert after is not None and after.attempts == v.attempts + 7
    assert await counts(store) == [7, 7]
