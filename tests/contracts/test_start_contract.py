"""A start's admission with its verification and started event (``Store.admit`` with
``start``): one atomic operation on every backend. Admitted, it leaves the row, the
event and the event's per-minute counts; refused, none of them; raced from several
processes against a limit of N, exactly N of each."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any

import pytest

from otpguard import numberlists
from otpguard.counters import FAMILIES, kinds_of
from otpguard.events import Event, EventType, new_event_id
from otpguard.models import Bucket, RateRule, Verification
from otpguard.stores import Store, store_from_url
from otpguard.stores.base import FLAGS_SET, EventQuery, Started

from .conftest import SHARED_STORE_URLS
from .test_store_contract import NUMBER, T0, make_v, race_in_processes

STARTED = EventType.STARTED.value


def start_of(v: Verification) -> Started:
    e = Event(type=STARTED, ts=v.created_at, id=new_event_id(v.created_at),
              verification_id=v.id, number_masked="+44***0000", number_hash="h-" + v.to,
              country="GB", channel=v.channel.value, client_ip="192.0.2.1")  # fmt: skip
    return Started(v, (e,))


def bucket(key: str = "adm:start", base: float = 3) -> Bucket:
    return Bucket(name="country", key=key, base=base, tau=3600.0, share=0.0)


async def started_events(store: Store) -> list[Event]:
    return await store.list_events(EventQuery(types=(STARTED,), limit=1000))


async def counted(store: Store) -> Counter[str]:
    out: Counter[str] = Counter()
    for row in await store.list_event_counts(T0 - 60, T0 + 60, FAMILIES):
        out[row.kind] += row.count
    return out


async def test_an_admitted_start_leaves_its_row_its_event_and_counts(store: Store) -> None:
    s = start_of(make_v())
    rule = RateRule("phone", f"phone:{NUMBER}", 5, 600)
    decision = await store.admit([rule], [bucket()], T0, start=s)
    assert (decision.allowed, decision.count) == (True, 1)
    assert await store.get_verification(s.verification.id) == s.verification
    assert await store.find_pending(NUMBER, T0) == s.verification  # its per-number index
    assert await started_events(store) == list(s.events)
    assert await counted(store) == Counter(kinds_of(s.events[0]))
    assert await store.count(rule.key, 600, T0) == 1


async def test_a_refused_start_leaves_nothing(store: Store) -> None:
    rule = RateRule("phone", "phone:full", 1, 600)
    assert (await store.admit([rule], [], T0)).allowed  # fills the rule
    by_rule = start_of(make_v())
    refused = await store.admit([rule], [], T0, start=by_rule)
    assert (refused.allowed, refused.rule) == (False, "phone")
    full = bucket("adm:full", base=1)
    assert (await store.admit([], [full], T0)).allowed
    by_bucket = start_of(make_v())
    refused = await store.admit([], [full], T0, start=by_bucket)
    assert (refused.allowed, refused.key) == (False, "adm:full")
    for s in (by_rule, by_bucket):
        assert await store.get_verification(s.verification.id) is None
    assert await store.find_pending(NUMBER, T0) is None
    assert await started_events(store) == []
    assert await counted(store) == Counter()


async def test_without_a_start_admit_writes_no_verification(store: Store) -> None:
    """A resend's admission (no ``start``) is the admission alone."""
    assert (await store.admit([], [bucket()], T0)).allowed
    assert await store.find_pending(NUMBER, T0) is None
    assert await started_events(store) == []


async def test_concurrent_starts_leave_exactly_the_limit(store: Store) -> None:
    rule = RateRule("phone", "phone:race", 4, 600)
    starts = [start_of(make_v()) for _ in range(12)]
    decisions = await asyncio.gather(*(store.admit([rule], [], T0, start=s) for s in starts))
    admitted = {s.verification.id for s, d in zip(starts, decisions, strict=True) if d.allowed}
    assert len(admitted) == 4
    assert {e.verification_id for e in await started_events(store)} == admitted
    for s in starts:
        found = await store.get_verification(s.verification.id)
        assert (found is not None) == (s.verification.id in admitted)


async def test_a_start_unless_a_flag_is_set_records_nothing_when_one_is(store: Store) -> None:
    """``Started.unless_flags``: a flag or a number-list entry among them, live when
    the admission runs, makes it record nothing and answer FLAGS_SET."""
    rule = RateRule("phone", f"phone:{NUMBER}", 5, 600)
    listed = numberlists.flag_keys(NUMBER)
    unless = ("suspend:+4474", "undeliverable:x", *listed)
    clear = dataclasses.replace(start_of(make_v()), unless_flags=unless)
    assert (await store.admit([rule], [], T0, start=clear)).allowed
    await store.set_flag("suspend:+4474", "1", T0 + 60)
    flagged = dataclasses.replace(start_of(make_v()), unless_flags=unless)
    assert (await store.admit([rule], [bucket()], T0 + 1, start=flagged)).rule == FLAGS_SET
    await store.set_flag("suspend:+4474", "1", T0 + 1)  # no longer live after T0 + 1
    block = numberlists.ListEntry("+447400", "block", created_at=T0)
    assert await store.put_list_entry(block, T0, 10) is None
    listed_only = dataclasses.replace(start_of(make_v()), unless_flags=unless)
    assert (await store.admit([rule], [], T0 + 2, start=listed_only)).rule == FLAGS_SET
    for s in (flagged, listed_only):
        assert await store.get_verification(s.verification.id) is None
    assert await store.count(rule.key, 600, T0 + 2) == 1
    assert [e.verification_id for e in await started_events(store)] == [clear.verification.id]
    assert await counted(store) == Counter(kinds_of(clear.events[0]))


# -- several processes: module-level, so that "spawn" can import them ---------------


async def _race(url: str, limit: int, calls: int, barrier: Any) -> list[bool]:
    store = store_from_url(url)
    await store.open()
    try:
        barrier.wait(timeout=60)
        rule = RateRule("phone", "phone:procs", limit, 600)
        b = bucket("adm:procs", base=1000)
        starts = [start_of(make_v()) for _ in range(calls)]
        decisions = await asyncio.gather(*(store.admit([rule], [b], T0, start=s) for s in starts))
        return [d.allowed for d in decisions]
    finally:
        await store.aclose()


def _start_worker(
    url: str, op: str, limit: int, calls: int, barrier: Any, results: Any
) -> None:  # race_in_processes' worker: ``calls`` starts against ``limit``
    try:
        results.put(asyncio.run(_race(url, limit, calls, barrier)))
    except BaseException as exc:
        results.put(f"worker failed: {exc!r}")
        raise


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_starts_across_processes_leave_exactly_the_limit(
    store: Store, store_url: str
) -> None:
    outcomes = race_in_processes(store_url, "start", 7, processes=4, calls=6, worker=_start_worker)
    assert sum(outcomes) == 7
    events = await started_events(store)
    assert len(events) == 7
    rows = [await store.get_verification(str(e.verification_id)) for e in events]
    assert all(v is not None for v in rows)
    assert len(await store.list_pending(NUMBER, T0, owner=None, limit=100)) == 7
    assert await counted(store) == Counter({kind: 7 for kind in kinds_of(events[0])})
