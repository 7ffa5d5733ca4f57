"""``Store.check_by_id``: a whole check by id on every backend. ``open_check``, the
engine's verdict on what it opened (a ``Judge``), and the verdict carried out: an
approval with its bookkeeping, or a wrong code's events and, at the last attempt,
the lock; the reservation given back when nothing was compared. Approval exactly
once under concurrency, in one process and across processes. (SQLite does all of it
in one transaction: tests/test_sqlite_store.py counts them.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from otpguard.events import Event, EventType, new_event_id
from otpguard.models import AttemptOutcome, Status
from otpguard.stores import EventQuery, Store, store_from_url
from otpguard.stores.opening import CheckOpened, CheckVerdict, Opened

from .conftest import SHARED_STORE_URLS
from .test_open_check_contract import opening
from .test_settle_contract import COUNTER, NOW, settlement
from .test_store_contract import NUMBER, race_in_processes, stored

RESERVED = [f"failed_checks:{NUMBER}", "failed_checks_ip:192.0.2.1"]


def event(kind: EventType, vid: str) -> Event:
    return Event(type=str(kind), ts=NOW, id=new_event_id(NOW), verification_id=vid)


def judge(right: bool) -> Any:
    """A judge that takes every counted attempt's code as ``right`` (or wrong)."""

    def decide(opened: CheckOpened) -> CheckVerdict:
        v, ticket = opened.verification, opened.ticket
        if opened.outcome is not Opened.OPENED or v is None:
            return CheckVerdict()
        if ticket is None or ticket.outcome is not AttemptOutcome.COUNTED:
            return CheckVerdict(release=RESERVED)
        tv = ticket.verification
        if right:
            return CheckVerdict(settlement(tv.id, tv.code_hash, reserved=RESERVED, buckets=[]))
        failed = event(EventType.CHECK_FAILED, tv.id)
        if tv.attempts < 5:
            return CheckVerdict(events=[failed])
        return CheckVerdict(events=[failed], lock_at=5, locked=[event(EventType.LOCKED, tv.id)])

    return decide


async def types(store: Store) -> list[str]:
    return sorted(e.type for e in await store.list_events(EventQuery()))


async def test_a_right_code_approves_and_gives_the_reservation_back(store: Store) -> None:
    v = await stored(store)
    closed = await store.check_by_id(opening(v.id, now=NOW), judge(right=True))
    assert closed.opened.outcome is Opened.OPENED and closed.approved and closed.released
    assert closed.verdict.settlement is not None and closed.stored() == []
    after = await store.get_verification(v.id)
    assert after is not None and after.status is Status.APPROVED and after.attempts == 1
    assert await store.count(RESERVED[0], 3600, NOW) == 0  # given back
    assert await types(store) == [str(EventType.CHECK_PASSED)]
    assert await store.count(COUNTER.key, 3600, NOW) == 1  # the settlement's bookkeeping


async def test_a_wrong_code_keeps_its_reservation_and_stores_its_event(store: Store) -> None:
    v = await stored(store)
    closed = await store.check_by_id(opening(v.id, now=NOW), judge(right=False))
    assert not closed.approved and not closed.locked
    assert [e.type for e in closed.stored()] == [str(EventType.CHECK_FAILED)]
    after = await store.get_verification(v.id)
    assert after is not None and after.status is Status.PENDING and after.attempts == 1
    assert await store.count(RESERVED[0], 3600, NOW) == 1
    assert await types(store) == [str(EventType.CHECK_FAILED)]


async def test_the_last_wrong_attempt_locks_and_then_nothing_is_compared(store: Store) -> None:
    v = await stored(store)
    for n in range(1, 6):
        closed = await store.check_by_id(opening(v.id, now=NOW), judge(right=False))
        assert closed.locked is (n == 5)
    assert [e.type for e in closed.stored()] == [str(EventType.CHECK_FAILED), str(EventType.LOCKED)]
    after = await store.get_verification(v.id)
    assert after is not None and after.status is Status.MAX_ATTEMPTS_REACHED
    # Locked: no attempt counted, nothing compared, the reservation given back.
    closed = await store.check_by_id(opening(v.id, now=NOW), judge(right=True))
    assert closed.opened.ticket is not None
    assert closed.opened.ticket.outcome is not AttemptOutcome.COUNTED
    assert not closed.approved and closed.verdict.release == RESERVED
    assert await store.count(RESERVED[0], 3600, NOW) == 5
    assert (await types(store)).count(str(EventType.CHECK_FAILED)) == 5


async def test_an_unknown_or_refused_check_is_judged_and_changes_nothing(store: Store) -> None:
    seen: list[Opened] = []

    def record(opened: CheckOpened) -> CheckVerdict:
        seen.append(opened.outcome)
        return CheckVerdict()

    closed = await store.check_by_id(opening("VE-nope", now=NOW), record)
    assert closed.opened.outcome is Opened.NOT_FOUND and not closed.approved
    v = await stored(store)
    assert (await store.check_by_id(opening(v.id, limit=1, now=NOW), record)).opened.ticket
    refused = await store.check_by_id(opening(v.id, limit=1, now=NOW), record)
    assert refused.opened.outcome is Opened.REFUSED
    assert seen[0] is Opened.NOT_FOUND and seen[-1] is Opened.REFUSED
    assert await types(store) == []


async def test_concurrent_right_codes_approve_exactly_once(store: Store) -> None:
    v = await stored(store)
    o = opening(v.id, limit=100, now=NOW, max_attempts=100)
    closed = await asyncio.gather(*(store.check_by_id(o, judge(right=True)) for _ in range(20)))
    assert sum(c.approved for c in closed) == 1
    assert await types(store) == [str(EventType.CHECK_PASSED)]
    assert await store.count(COUNTER.key, 3600, NOW) == 1
    # Given back: the approval's, and those that found it approved (nothing compared);
    # a right code that lost the race after its attempt counted stays reserved here
    # (the engine gives it back itself, as another call).
    lost = sum(
        1 for c in closed
        if c.opened.ticket is not None and c.opened.ticket.outcome is AttemptOutcome.COUNTED
        and not c.approved
    )  # fmt: skip
    assert [await store.count(k, 3600, NOW) for k in RESERVED] == [lost, lost]


# -- across processes: module-level, so that "spawn" can import them ----------------


async def _race(url: str, vid: str, calls: int, barrier: Any) -> list[bool]:
    store = store_from_url(url)
    await store.open()
    try:
        barrier.wait(timeout=60)
        o = opening(vid, limit=100, now=NOW, max_attempts=100)
        closed = await asyncio.gather(*(store.check_by_id(o, judge(True)) for _ in range(calls)))
        return [c.approved for c in closed]
    finally:
        await store.aclose()


def _check_worker(url: str, op: str, vid: str, calls: int, barrier: Any, results: Any) -> None:
    try:  # race_in_processes' worker: ``calls`` right codes for ``vid``
        results.put(asyncio.run(_race(url, vid, calls, barrier)))
    except BaseException as exc:
        results.put(f"worker failed: {exc!r}")
        raise


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_right_codes_across_processes_approve_exactly_once(
    store: Store, store_url: str
) -> None:
    v = await stored(store)
    outcomes = race_in_processes(store_url, "check", v.id, processes=3, calls=6,
                                 worker=_check_worker)  # fmt: skip
    assert sum(outcomes) == 1 and len(outcomes) == 18
    assert await types(store) == [str(EventType.CHECK_PASSED)]
    assert await store.count(COUNTER.key, 3600, NOW) == 1
