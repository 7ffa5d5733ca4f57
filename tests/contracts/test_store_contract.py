"""The storage contract (``otpguard.stores.base``), run against every backend in
``conftest.STORE_URLS``. Time is always passed explicitly as ``now``; nothing sleeps.

Where ``base.py``'s docstrings leave a choice open, the test pinning the choice
says so in its docstring.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from collections import Counter
from typing import Any

import pytest

from otpguard.errors import StorageError
from otpguard.events import Event, EventType
from otpguard.models import (
    FINAL_STATUSES,
    AttemptOutcome,
    Channel,
    RateRule,
    Status,
    Verification,
)
from otpguard.stores import Alert, ApiKey, EventQuery, Store, store_from_url

from ..dump import dump_store
from .conftest import SHARED_STORE_URLS

T0 = 1_800_000_000.0  # every offset below is exact in binary floating point
NUMBER = "+447400123456"
OTHER = "+447400999999"


def make_v(
    *,
    to: str = NUMBER,
    created_at: float = T0,
    ttl: float = 600.0,
    cooldown: float = 30.0,
    status: Status = Status.PENDING,
    **changes: Any,
) -> Verification:
    v = Verification(
        id="VE" + uuid.uuid4().hex,
        to=to,
        channel=Channel.SMS,
        status=status,
        key_id="k1",
        code_hash="tag-" + uuid.uuid4().hex,
        created_at=created_at,
        updated_at=created_at,
        expires_at=created_at + ttl,
        resend_available_at=created_at + cooldown,
    )
    return v.with_(**changes)


async def stored(store: Store, **kwargs: Any) -> Verification:
    v = make_v(**kwargs)
    await store.create_verification(v)
    return v


def rule(name: str, key: str, limit: int, window: int = 60) -> RateRule:
    return RateRule(name=name, key=key, limit=limit, window=window)


# -- cross-process races ----------------------------------------------------------
# Each process opens its own store on the same URL, waits at a barrier, then fires
# ``calls`` concurrent operations. Module-level so that "spawn" can import them.


async def _race(url: str, op: str, arg: Any, calls: int, barrier: Any) -> list[Any]:
    store = store_from_url(url)
    await store.open()
    try:
        barrier.wait(timeout=60)
        if op == "approve":
            vid, tag = arg
            approvals = (store.approve(vid, T0, code_hash=tag) for _ in range(calls))
            return list(await asyncio.gather(*approvals))
        if op == "attempt":
            tickets = await asyncio.gather(
                *(store.record_attempt(arg, 5, T0) for _ in range(calls))
            )
            return [t.outcome.value if t else None for t in tickets]
        if op == "replace":
            vid, tag = arg
            resends = (
                store.replace_code(vid, "k1", f"tag-{i}", T0, T0 + 600, T0, replaces=tag)
                for i in range(calls)
            )
            return [None if r is None else r.code_hash for r in await asyncio.gather(*resends)]
        if op == "settle":  # lazily: test_settle_contract imports this module
            from .test_settle_contract import settlement

            return list(
                await asyncio.gather(*(store.settle(settlement(*arg)) for _ in range(calls)))
            )
        if op == "admit":
            admits = await asyncio.gather(*(store.admit([], [arg], T0) for _ in range(calls)))
            return [d.allowed for d in admits]
        decisions = await asyncio.gather(*(store.hit([RateRule(*arg)], T0) for _ in range(calls)))
        return [d.allowed for d in decisions]
    finally:
        await store.aclose()


def _race_worker(url: str, op: str, arg: Any, calls: int, barrier: Any, results: Any) -> None:
    try:
        results.put(asyncio.run(_race(url, op, arg, calls, barrier)))
    except BaseException as exc:
        results.put(f"worker failed: {exc!r}")
        raise


def race_in_processes(
    url: str, op: str, arg: Any, processes: int = 4, calls: int = 1, worker: Any = None
) -> list[Any]:
    """``worker`` (module-level, ``_race_worker``'s signature) runs in each process."""
    # "spawn": forking a process that already runs store threads is unsafe.
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=worker or _race_worker, args=(url, op, arg, calls, barrier, results))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    try:
        out: list[Any] = []
        for _ in procs:
            got = results.get(timeout=120)
            assert isinstance(got, list), got
            out.extend(got)
        return out
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        results.join_thread()


# -- lifecycle --------------------------------------------------------------------


async def test_health_ok(store: Store) -> None:
    await store.health()


async def test_open_twice_is_harmless(store: Store) -> None:
    v = await stored(store)
    await store.open()
    assert await store.get_verification(v.id) == v


async def test_closed_store_raises_storage_error(store: Store) -> None:
    v = await stored(store)
    await store.aclose()
    with pytest.raises(StorageError):
        await store.health()
    with pytest.raises(StorageError):
        await store.get_verification(v.id)
    with pytest.raises(StorageError):
        await store.create_verification(make_v())
    with pytest.raises(StorageError):
        await store.approve(v.id, T0, code_hash=v.code_hash)
    with pytest.raises(StorageError):
        await store.hit([rule("r", "k", 5)], T0)
    await store.aclose()  # closing twice is harmless


# -- verifications ----------------------------------------------------------------


async def test_create_get_roundtrip_preserves_every_field(store: Store) -> None:
    v = Verification(
        id="VE" + uuid.uuid4().hex,
        to=NUMBER,
        channel=Channel.WHATSAPP,
        status=Status.PENDING,
        key_id="key-2026",
        code_hash="f3a1c0de" * 8,
        created_at=T0 + 0.125,
        updated_at=T0 + 0.5,
        expires_at=T0 + 600.25,
        resend_available_at=T0 + 30.75,
        attempts=2,
        sends=3,
        client_ip="203.0.113.7",
        country="GB",
        locale="en-GB",
        code_length=8,
        service_name="Acme",
        owner="og_0123456789ab",
        purpose="transaction",
        amount="1234.50",
        currency="EUR",
        payee="Zoë Müller & Söhne (株式会社)",
    )
    await store.create_verification(v)
    got = await store.get_verification(v.id)
    assert got == v
    assert got is not None and type(got.channel) is Channel and type(got.status) is Status


async def test_what_a_code_is_for_survives_every_operation(store: Store) -> None:
    """purpose, amount, currency and payee are kept through a resend, an attempt, an
    approval, and come back from the pending lists (the Verifier re-signs resends with
    them and shows them in answers)."""
    bound = {"purpose": "transaction", "amount": "25.00", "currency": "GBP", "payee": "Acme"}
    v = make_v(**bound)
    await store.create_verification(v)
    replaced = await store.replace_code(
        v.id, "k2", "tag-new", T0 + 30, T0 + 630, T0 + 90, replaces=v.code_hash
    )
    ticket = await store.record_attempt(v.id, 5, T0 + 31)
    listed = await store.list_pending(NUMBER, T0 + 31, owner=None, limit=5)
    assert await store.approve(v.id, T0 + 32, code_hash="tag-new")
    approved = await store.get_verification(v.id)
    assert replaced is not None and ticket is not None and approved is not None
    for got in (replaced, ticket.verification, *listed, approved):
        assert (got.purpose, got.amount, got.currency, got.payee) == tuple(bound.values())
    plain = make_v()
    await store.create_verification(plain)
    got = await store.get_verification(plain.id)
    assert got is not None and (got.purpose, got.amount, got.payee) == ("login", None, None)


async def test_roundtrip_optional_fields_none(store: Store) -> None:
    v = make_v(channel=Channel.VOICE, client_ip=None, country=None, locale=None)
    await store.create_verification(v)
    assert await store.get_verification(v.id) == v


async def test_get_unknown_is_none(store: Store) -> None:
    assert await store.get_verification("VE-nope") is None


async def test_find_pending_newest_unexpired_of_that_number(store: Store) -> None:
    older = await stored(store, created_at=T0, ttl=1000)
    newer = await stored(store, created_at=T0 + 10, ttl=100)
    approved = await stored(store, created_at=T0 + 20)
    assert await store.approve(approved.id, T0 + 21, code_hash=approved.code_hash)
    await stored(store, created_at=T0 + 30, status=Status.CANCELED)
    await stored(store, created_at=T0 + 40, ttl=5)  # expires at T0 + 45
    await stored(store, to=OTHER, created_at=T0 + 50)

    assert await store.find_pending(NUMBER, T0 + 60) == newer
    # newer expires at T0 + 110 (expires_at == now counts as expired): the older one is left
    assert await store.find_pending(NUMBER, T0 + 110) == older
    assert await store.find_pending(NUMBER, T0 + 1000) is None
    assert await store.find_pending("+15005550006", T0) is None


async def test_list_pending_newest_first_by_owner_and_bounded(store: Store) -> None:
    a1 = await stored(store, created_at=T0, owner="key-a")
    b1 = await stored(store, created_at=T0 + 1, owner="key-b")
    a2 = await stored(store, created_at=T0 + 2, owner="key-a")
    await stored(store, created_at=T0 + 3, owner="key-a", status=Status.CANCELED)
    await stored(store, created_at=T0 + 4, owner="key-a", ttl=5)  # expires at T0 + 9
    await stored(store, to=OTHER, created_at=T0 + 5, owner="key-a")
    a3 = await stored(store, created_at=T0 + 6, owner="key-a")
    anyone = await stored(store, created_at=T0 - 1)  # no owner: made without a key
    now = T0 + 10
    assert await store.list_pending(NUMBER, now, owner="key-a", limit=5) == [a3, a2, a1, anyone]
    assert await store.list_pending(NUMBER, now, owner="key-a", limit=2) == [a3, a2]
    assert await store.list_pending(NUMBER, now, owner="key-b", limit=5) == [b1, anyone]
    assert await store.list_pending(NUMBER, now, owner=None, limit=4) == [a3, a2, b1, a1]
    assert await store.list_pending(NUMBER, now, owner="key-c", limit=5) == [anyone]
    assert await store.list_pending(NUMBER, now, owner="key-a", limit=0) == []


# -- record_attempt -----------------------------------------------------------------


async def test_record_attempt_counts(store: Store) -> None:
    v = await stored(store)
    for n in (1, 2, 3):
        ticket = await store.record_attempt(v.id, 3, T0 + n)
        assert ticket is not None
        assert ticket.outcome is AttemptOutcome.COUNTED
        assert ticket.verification == v.with_(attempts=n, updated_at=T0 + n)
        assert await store.get_verification(v.id) == ticket.verification


async def test_record_attempt_at_cap_counts_nothing_and_keeps_status(store: Store) -> None:
    """At the cap nothing is counted and the status stays: the check that counted the
    last attempt decides (approve or lock), so an in-flight right code can still win."""
    v = await stored(store, attempts=3)
    ticket = await store.record_attempt(v.id, 3, T0 + 5)
    assert ticket is not None
    assert ticket.outcome is AttemptOutcome.LOCKED
    assert ticket.verification == v
    assert await store.get_verification(v.id) == v


async def test_record_attempt_expired_marks_expired(store: Store) -> None:
    v = await stored(store, ttl=600)
    ticket = await store.record_attempt(v.id, 5, T0 + 600)  # expires_at == now: expired
    assert ticket is not None
    assert ticket.outcome is AttemptOutcome.EXPIRED
    expired = v.with_(status=Status.EXPIRED, updated_at=T0 + 600)
    assert ticket.verification == expired
    assert await store.get_verification(v.id) == expired


async def test_record_attempt_expiry_wins_over_cap(store: Store) -> None:
    """Choice: the state table is read top-down, so pending + expired + at the cap is EXPIRED."""
    v = await stored(store, attempts=5)
    ticket = await store.record_attempt(v.id, 5, T0 + 601)
    assert ticket is not None and ticket.outcome is AttemptOutcome.EXPIRED
    assert ticket.verification.status is Status.EXPIRED


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
async def test_record_attempt_final_status_unchanged(store: Store, status: Status) -> None:
    v = await stored(store, status=status, attempts=1)
    ticket = await store.record_attempt(v.id, 5, T0 + 1)
    assert ticket is not None
    assert ticket.outcome is AttemptOutcome.NOT_PENDING
    assert ticket.verification == v
    assert await store.get_verification(v.id) == v


async def test_record_attempt_unknown_is_none(store: Store) -> None:
    assert await store.record_attempt("VE-nope", 5, T0) is None


async def test_record_attempt_concurrent_counts_exactly_max(store: Store) -> None:
    v = await stored(store)
    tickets = await asyncio.gather(*(store.record_attempt(v.id, 5, T0 + 1) for _ in range(30)))
    outcomes = Counter(t.outcome if t else None for t in tickets)
    assert outcomes[AttemptOutcome.COUNTED] == 5
    assert outcomes[AttemptOutcome.LOCKED] == 25
    after = await store.get_verification(v.id)
    assert after is not None
    assert (after.attempts, after.status) == (5, Status.PENDING)


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_record_attempt_cross_process_counts_exactly_max(
    store: Store, store_url: str
) -> None:
    v = await stored(store)
    outcomes = Counter(race_in_processes(store_url, "attempt", v.id, processes=4, calls=8))
    assert outcomes[AttemptOutcome.COUNTED.value] == 5
    assert outcomes[AttemptOutcome.LOCKED.value] == 27
    assert sum(outcomes.values()) == 32
    after = await store.get_verification(v.id)
    assert after is not None and after.attempts == 5


# -- approve / lock / replace / transition -------------------------------------------


async def test_approve_exactly_once(store: Store) -> None:
    v = await stored(store)
    assert await store.approve(v.id, T0 + 5, code_hash=v.code_hash) is True
    assert await store.approve(v.id, T0 + 6, code_hash=v.code_hash) is False
    assert await store.get_verification(v.id) == v.with_(status=Status.APPROVED, updated_at=T0 + 5)


async def test_approve_not_after_expiry(store: Store) -> None:
    v = await stored(store, ttl=600)
    assert await store.approve(v.id, T0 + 600, code_hash=v.code_hash) is False
    after = await store.get_verification(v.id)
    assert after is not None and after.status is Status.PENDING


@pytest.mark.parametrize("status", [Status.CANCELED, Status.MAX_ATTEMPTS_REACHED, Status.EXPIRED])
async def test_approve_refused_when_not_pending(store: Store, status: Status) -> None:
    v = await stored(store, status=status)
    assert await store.approve(v.id, T0 + 1, code_hash=v.code_hash) is False
    assert await store.get_verification(v.id) == v


async def test_approve_only_the_tag_that_was_compared(store: Store) -> None:
    """A resend after the comparison swapped the tag: the old code approves nothing,
    the new tag still can."""
    v = await stored(store, cooldown=0)
    assert await store.approve(v.id, T0 + 1, code_hash="tag-other") is False
    new = await store.replace_code(
        v.id, "k1", "tag-new", T0 + 2, T0 + 602, T0 + 2, replaces=v.code_hash
    )
    assert new is not None
    assert await store.approve(v.id, T0 + 3, code_hash=v.code_hash) is False
    after = await store.get_verification(v.id)
    assert after is not None and after.status is Status.PENDING
    assert await store.approve(v.id, T0 + 4, code_hash="tag-new") is True


async def test_approve_unknown_is_false(store: Store) -> None:
    assert await store.approve("VE-nope", T0, code_hash="tag") is False


async def test_approve_concurrent_exactly_one(store: Store) -> None:
    v = await stored(store)
    approvals = (store.approve(v.id, T0 + 1, code_hash=v.code_hash) for _ in range(20))
    results = await asyncio.gather(*approvals)
    assert results.count(True) == 1
    assert results.count(False) == 19


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_approve_cross_process_exactly_one(store: Store, store_url: str) -> None:
    v = await stored(store)
    results = race_in_processes(store_url, "approve", (v.id, v.code_hash), processes=4, calls=1)
    assert sorted(results) == [False, False, False, True]


async def test_lock_if_exhausted(store: Store) -> None:
    v = await stored(store, attempts=2)
    assert await store.lock_if_exhausted(v.id, 3, T0 + 1) is False
    assert await store.get_verification(v.id) == v
    assert await store.lock_if_exhausted(v.id, 2, T0 + 2) is True
    locked = v.with_(status=Status.MAX_ATTEMPTS_REACHED, updated_at=T0 + 2)
    assert await store.get_verification(v.id) == locked
    assert await store.lock_if_exhausted(v.id, 2, T0 + 3) is False
    assert await store.lock_if_exhausted("VE-nope", 2, T0) is False


async def test_replace_code(store: Store) -> None:
    v = await stored(store, attempts=2, cooldown=30, ttl=600)
    new = await store.replace_code(
        v.id, "k2", "tag-new", T0 + 30, T0 + 630, T0 + 90, replaces=v.code_hash
    )
    expected = v.with_(
        key_id="k2",
        code_hash="tag-new",
        expires_at=T0 + 630,
        resend_available_at=T0 + 90,
        updated_at=T0 + 30,
        sends=2,
        attempts=2,
    )
    assert new == expected
    assert await store.get_verification(v.id) == expected


async def test_replace_code_refused_in_cooldown(store: Store) -> None:
    v = await stored(store, cooldown=30)
    new = "tag-new"
    replaced = await store.replace_code(
        v.id, "k2", new, T0 + 29.5, T0 + 700, T0 + 60, replaces=v.code_hash
    )
    assert replaced is None
    assert await store.get_verification(v.id) == v


@pytest.mark.parametrize("status", [Status.APPROVED, Status.CANCELED, Status.EXPIRED])
async def test_replace_code_refused_when_not_pending(store: Store, status: Status) -> None:
    v = await stored(store, status=status)
    replaced = await store.replace_code(
        v.id, "k2", "tag-new", T0 + 60, T0 + 700, T0 + 90, replaces=v.code_hash
    )
    assert replaced is None
    assert await store.get_verification(v.id) == v


async def test_replace_code_refused_when_expired(store: Store) -> None:
    v = await stored(store, ttl=600)
    replaced = await store.replace_code(
        v.id, "k2", "tag-new", T0 + 600, T0 + 1200, T0 + 630, replaces=v.code_hash
    )
    assert replaced is None
    assert await store.get_verification(v.id) == v
    gone = await store.replace_code("VE-nope", "k2", "t", T0 + 60, T0 + 700, T0 + 90, replaces="t")
    assert gone is None


async def test_replace_code_refused_when_the_tag_changed(store: Store) -> None:
    """A compare-and-set on the tag read: a resend that read tags another resend has
    since replaced changes nothing (else a kept earlier code would be dropped)."""
    v = await stored(store, cooldown=0)
    first = await store.replace_code(
        v.id, "k1", "tag-a", T0 + 1, T0 + 601, T0 + 1, replaces=v.code_hash
    )
    assert first is not None and first.code_hash == "tag-a"
    stale = await store.replace_code(
        v.id, "k1", "tag-b", T0 + 2, T0 + 602, T0 + 2, replaces=v.code_hash
    )
    assert stale is None
    assert await store.get_verification(v.id) == first


async def test_replace_code_concurrent_exactly_one(store: Store) -> None:
    v = await stored(store, cooldown=0)
    resends = [
        store.replace_code(v.id, "k1", f"tag-{i}", T0, T0 + 600, T0, replaces=v.code_hash)
        for i in range(20)
    ]
    won = [r for r in await asyncio.gather(*resends) if r is not None]
    assert len(won) == 1
    after = await store.get_verification(v.id)
    assert after is not None and after.code_hash == won[0].code_hash and after.sends == 2


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_replace_code_cross_process_exactly_one(store: Store, store_url: str) -> None:
    v = await stored(store, cooldown=0)
    results = race_in_processes(store_url, "replace", (v.id, v.code_hash), processes=4, calls=3)
    won = [r for r in results if r is not None]
    assert len(won) == 1 and len(results) == 12
    after = await store.get_verification(v.id)
    assert after is not None and after.code_hash == won[0] and after.sends == 2


async def test_transition(store: Store) -> None:
    v = await stored(store)
    assert await store.transition(v.id, [Status.APPROVED], Status.CANCELED, T0 + 1) is None
    assert await store.get_verification(v.id) == v
    moved = await store.transition(v.id, [Status.PENDING], Status.CANCELED, T0 + 2)
    assert moved == v.with_(status=Status.CANCELED, updated_at=T0 + 2)
    assert await store.get_verification(v.id) == moved
    again = await store.transition(v.id, (Status.CANCELED, Status.EXPIRED), Status.FAILED, T0 + 3)
    assert again is not None and again.status is Status.FAILED
    assert await store.transition(v.id, [], Status.PENDING, T0 + 4) is None
    assert await store.transition("VE-nope", [Status.PENDING], Status.FAILED, T0) is None


# -- rate windows -------------------------------------------------------------------


async def test_hit_empty_rules_allowed(store: Store) -> None:
    decision = await store.hit([], T0)
    assert decision.allowed and decision.rule is None and decision.retry_after == 0


async def test_hit_records_until_limit(store: Store) -> None:
    r = rule("per-number", "num:1", 3)
    counts = [(await store.hit([r], T0 + i)).count for i in range(3)]
    assert counts == [1, 2, 3]
    refused = await store.hit([r], T0 + 3)
    assert not refused.allowed
    assert (refused.rule, refused.count) == ("per-number", 3)
    assert await store.count("num:1", 60, T0 + 3) == 3


async def test_hit_all_or_nothing(store: Store) -> None:
    roomy, full = rule("roomy", "a", 10), rule("full", "b", 1)
    assert (await store.hit([full], T0)).allowed
    decision = await store.hit([roomy, full], T0 + 1)
    assert not decision.allowed and decision.rule == "full"
    assert await store.count("a", 60, T0 + 1) == 0  # nothing recorded under the roomy rule
    assert await store.count("b", 60, T0 + 1) == 1


async def test_hit_refusal_names_first_full_rule_in_order(store: Store) -> None:
    a, b = rule("a", "ka", 1), rule("b", "kb", 1)
    await store.hit([a, b], T0)
    assert (await store.hit([a, b], T0 + 1)).rule == "a"
    assert (await store.hit([b, a], T0 + 1)).rule == "b"


async def test_hit_sliding_window_and_retry_after(store: Store) -> None:
    r = rule("r", "k", 2, window=60)
    await store.hit([r], T0)
    await store.hit([r], T0 + 10)
    refused = await store.hit([r], T0 + 30)
    assert not refused.allowed and refused.retry_after == 30  # T0 leaves at T0 + 60
    assert not (await store.hit([r], T0 + 59.75)).allowed
    assert await store.count("k", 60, T0 + 59.75) == 2
    assert await store.count("k", 60, T0 + 60) == 1  # at now = ts + window it has left
    allowed = await store.hit([r], T0 + 60)
    assert allowed.allowed and allowed.count == 2
    refused = await store.hit([r], T0 + 61)
    assert refused.retry_after == 9  # the T0 + 10 entry leaves at T0 + 70


async def test_hit_cost_and_retry_after_for_cost(store: Store) -> None:
    r = rule("r", "k", 3, window=60)
    for t in (0, 10, 20):
        await store.hit([r], T0 + t)
    refused = await store.hit([r], T0 + 30, cost=2)
    # two entries must leave for two more to fit: the second oldest (T0 + 10) leaves at T0 + 70
    assert not refused.allowed and refused.retry_after == 40 and refused.count == 3
    assert not (await store.hit([r], T0 + 69.5, cost=2)).allowed
    allowed = await store.hit([r], T0 + 70, cost=2)
    assert allowed.allowed and allowed.count == 3
    assert await store.count("k", 60, T0 + 70) == 3


async def test_hit_cost_records_cost_entries(store: Store) -> None:
    r = rule("r", "k", 5)
    decision = await store.hit([r], T0, cost=3)
    assert decision.allowed and decision.count == 3
    assert await store.count("k", 60, T0) == 3
    assert not (await store.hit([r], T0, cost=3)).allowed
    assert (await store.hit([r], T0, cost=2)).allowed
    assert await store.count("k", 60, T0) == 5


async def test_hit_peek_records_nothing(store: Store) -> None:
    """Choice: a peek's ``count`` is what is stored (the peek added nothing)."""
    r = rule("r", "k", 2)
    await store.hit([r], T0)
    peek = await store.hit([r], T0 + 1, record=False)
    assert peek.allowed and peek.count == 1
    assert await store.count("k", 60, T0 + 1) == 1
    await store.hit([r], T0 + 2)
    peek = await store.hit([r], T0 + 3, record=False)
    assert not peek.allowed and peek.rule == "r" and peek.retry_after == 57
    assert await store.count("k", 60, T0 + 3) == 2


async def test_hit_allowed_count_is_the_fullest_rule(store: Store) -> None:
    """Allowed decisions carry no rule name; ``count`` is that of the highest count/limit."""
    loose, tight = rule("loose", "a", 100), rule("tight", "b", 4)
    for _ in range(5):
        await store.hit([loose], T0)
    decision = await store.hit([loose, tight], T0 + 1)
    assert decision.allowed and decision.rule is None
    assert decision.count == 1  # tight: 1/4 beats loose: 6/100


async def test_hit_rules_sharing_a_key_record_once(store: Store) -> None:
    """Choice: one hit is one event per key, even when two rules (windows) share the key."""
    minute, hour = rule("minute", "num:1", 3, 60), rule("hour", "num:1", 10, 3600)
    assert (await store.hit([minute, hour], T0)).allowed
    assert await store.count("num:1", 3600, T0) == 1


async def test_hit_windows_are_per_key(store: Store) -> None:
    await store.hit([rule("r", "k1", 1)], T0)
    assert (await store.hit([rule("r", "k2", 1)], T0)).allowed
    assert await store.count("k1", 60, T0) == 1
    assert await store.count("k3", 60, T0) == 0


async def test_hit_concurrent_exact_limit(store: Store) -> None:
    r = rule("r", "k", 3)
    decisions = await asyncio.gather(*(store.hit([r], T0) for _ in range(50)))
    assert sum(d.allowed for d in decisions) == 3
    assert await store.count("k", 60, T0) == 3


@pytest.mark.slow  # races worker processes
@pytest.mark.parametrize("store_url", SHARED_STORE_URLS, indirect=True)
async def test_hit_cross_process_exact_limit(store: Store, store_url: str) -> None:
    allowed = race_in_processes(store_url, "hit", ("r", "k", 3, 60), processes=4, calls=5)
    assert len(allowed) == 20 and allowed.count(True) == 3
    assert await store.count("k", 60, T0) == 3


async def test_release_gives_back_entries_at_that_time_only(store: Store) -> None:
    """A reservation given back: one entry at ``at`` leaves each key, counted over a
    short window and a long one (whose count reads per-minute totals)."""
    minute, hour = rule("m", "num:1", 3, 60), rule("h", "num:1", 3, 3600)
    ip = rule("ip", "ip:1", 5, 3600)
    await store.hit([minute, hour, ip], T0)
    await store.hit([minute, hour, ip], T0 + 30.5, cost=2)
    assert not (await store.hit([hour], T0 + 31)).allowed
    await store.release(["num:1", "ip:1", "num:1", "never-hit"], T0 + 30.5)
    assert await store.count("num:1", 60, T0 + 31) == 2
    assert await store.count("num:1", 3600, T0 + 600) == 2
    assert await store.count("ip:1", 3600, T0 + 600) == 2
    assert await store.count("never-hit", 60, T0 + 31) == 0
    assert (await store.hit([hour], T0 + 600)).allowed
    await store.release(["num:1"], T0 + 30.5, cost=5)  # fewer there: those it has
    await store.release(["ip:1"], T0 + 7)  # nothing at that time: nothing changes
    assert await store.count("num:1", 3600, T0 + 600) == 2  # T0 and T0 + 600
    assert await store.count("ip:1", 3600, T0 + 600) == 2


async def test_release_concurrent_is_exact(store: Store) -> None:
    """Ten reservations on two keys, five given back at once: exactly five fit again."""
    a, b = rule("a", "rel:a", 10, 3600), rule("b", "rel:b", 10, 3600)
    assert all(d.allowed for d in await asyncio.gather(*(store.hit([a, b], T0) for _ in range(10))))
    await asyncio.gather(*(store.release(["rel:a", "rel:b"], T0) for _ in range(5)))
    assert await store.count("rel:a", 3600, T0 + 1) == 5
    decisions = await asyncio.gather(*(store.hit([a, b], T0 + 1) for _ in range(12)))
    assert sum(d.allowed for d in decisions) == 5
    assert await store.count("rel:b", 3600, T0 + 1) == 10


async def test_count_window(store: Store) -> None:
    r = rule("r", "k", 100, window=3600)
    for t in (0, 100, 200):
        await store.hit([r], T0 + t)
    assert await store.count("k", 3600, T0 + 200) == 3
    assert await store.count("k", 150, T0 + 200) == 2
    assert await store.count("k", 50, T0 + 200) == 1


# -- flags ----------------------------------------------------------------------------


async def test_flags_expire(store: Store) -> None:
    await store.set_flag("suspend:+4474", "conversion", T0 + 100)
    assert await store.get_flag("suspend:+4474", T0) == "conversion"
    assert await store.get_flag("suspend:+4474", T0 + 99.5) == "conversion"
    assert await store.get_flag("suspend:+4474", T0 + 100) is None
    assert await store.get_flag("unknown", T0) is None
    await store.set_flag("suspend:+4474", "manual", T0 + 200)  # overwrite
    assert await store.get_flag("suspend:+4474", T0 + 150) == "manual"


# -- events ---------------------------------------------------------------------------


def make_events() -> list[Event]:
    rows = [
        (EventType.STARTED, "h1", "198.51.100.1", "GB"),
        (EventType.SENT, "h1", "198.51.100.1", "GB"),
        (EventType.REFUSED, "h2", "198.51.100.2", "FR"),
        (EventType.CHECK_FAILED, "h1", "198.51.100.2", "GB"),
        (EventType.CHECK_PASSED, "h3", "198.51.100.3", "DE"),
    ]
    return [
        Event(
            type=str(etype),
            ts=T0 + i,
            id=f"{int((T0 + i) * 1000):013x}{i:012x}",
            verification_id=f"VE{i}",
            number_masked="+44******3456",
            number_hash=number_hash,
            country=country,
            channel="sms",
            client_ip=ip,
            reason="because" if i % 2 else None,
            rule="per-ip" if i == 2 else None,
            provider_code=21610 if i == 2 else None,
            details={"i": i, "nested": {"ok": True}, "list": [1, "two"]},
        )
        for i, (etype, number_hash, ip, country) in enumerate(rows)
    ]


async def test_events_roundtrip_newest_first(store: Store) -> None:
    events = make_events()
    await store.add_events(events)
    await store.add_events([])
    assert await store.list_events(EventQuery()) == events[::-1]


async def test_events_filters(store: Store) -> None:
    events = make_events()
    await store.add_events(events)

    async def ids(**kw: Any) -> list[str]:
        return [e.id for e in await store.list_events(EventQuery(**kw))]

    e = [ev.id for ev in events]
    assert await ids(types=(str(EventType.SENT), str(EventType.REFUSED))) == [e[2], e[1]]
    assert await ids(number_hash="h1") == [e[3], e[1], e[0]]
    assert await ids(client_ip="198.51.100.2") == [e[3], e[2]]
    assert await ids(country="GB") == [e[3], e[1], e[0]]
    assert await ids(number_hash="h1", client_ip="198.51.100.1") == [e[1], e[0]]
    # Choice: since is inclusive, until exclusive.
    assert await ids(since=T0 + 1, until=T0 + 3) == [e[2], e[1]]
    assert await ids(types=("nope",)) == []


async def test_events_by_several_number_hashes(store: Store) -> None:
    """A number's hash under every key (a rotation): an event under any of them
    matches, with the other filters and the cursor as for one hash."""
    events = make_events()
    await store.add_events(events)

    async def ids(**kw: Any) -> list[str]:
        return [e.id for e in await store.list_events(EventQuery(**kw))]

    e = [ev.id for ev in events]
    assert await ids(number_hash=("h1", "h3")) == [e[4], e[3], e[1], e[0]]
    assert await ids(number_hash=("h3", "h1")) == [e[4], e[3], e[1], e[0]]  # order is no rank
    assert await ids(number_hash=("h1",)) == await ids(number_hash="h1")
    assert await ids(number_hash=("h2", "nope")) == [e[2]]
    assert await ids(number_hash=("h1", "h2"), country="GB", before_id=e[3]) == [e[1], e[0]]
    assert await ids(number_hash=("h1", "h3"), types=(str(EventType.CHECK_PASSED),)) == [e[4]]
    assert await ids(number_hash=()) == []  # no hash: no number's events
    assert await ids(number_hash=None) == e[::-1]


async def test_events_pagination(store: Store) -> None:
    events = make_events()
    await store.add_events(events)
    first = await store.list_events(EventQuery(limit=2))
    assert first == [events[4], events[3]]
    second = await store.list_events(EventQuery(limit=2, before_id=first[-1].id))
    assert second == [events[2], events[1]]
    third = await store.list_events(EventQuery(limit=2, before_id=second[-1].id))
    assert third == [events[0]]
    assert await store.list_events(EventQuery(limit=2, before_id=events[0].id)) == []


# -- refusal tallies ------------------------------------------------------------------


def refusal(ts: float, **fields: Any) -> Event:
    return Event(type=str(EventType.REFUSED), ts=ts, reason="rate_limited", rule="phone",
                 number_hash="h1", details={"scope": "country GB"}, **fields)  # fmt: skip


async def test_tally_counts_each_refusal_once_and_keeps_the_first_as_example(
    store: Store,
) -> None:
    minute = int(T0)  # T0 is a whole minute
    counts = [await store.tally_refusal(minute, "k", refusal(T0 + i)) for i in (5, 7, 6)]
    assert counts == [1, 2, 3]
    assert await store.tally_refusal(minute, "other", refusal(T0 + 1)) == 1
    assert await store.tally_refusal(minute + 60, "k", refusal(T0 + 61)) == 1
    tallies = {(t.minute, t.key): t for t in await store.list_refusal_tallies(T0, T0 + 60)}
    assert set(tallies) == {(minute, "k"), (minute, "other")}
    k = tallies[(minute, "k")]
    assert (k.count, k.last_ts) == (3, T0 + 7)  # the newest time, not the last written
    assert k.example == refusal(T0 + 5)
    # Choice: a tally belongs to every window that overlaps its minute.
    later = await store.list_refusal_tallies(T0 + 59, T0 + 61)
    assert sorted((t.minute, t.key) for t in later) == [
        (minute, "k"), (minute, "other"), (minute + 60, "k"),
    ]  # fmt: skip
    assert await store.list_refusal_tallies(T0 + 120, T0 + 300) == []


async def test_concurrent_tallies_hand_out_every_count_once(store: Store) -> None:
    results = await asyncio.gather(
        *(store.tally_refusal(int(T0), "k", refusal(T0 + i / 100)) for i in range(50))
    )
    assert sorted(results) == list(range(1, 51))  # exactly one caller sees 1 (stores it)
    [t] = await store.list_refusal_tallies(T0, T0 + 60)
    assert t.count == 50


async def test_purge_removes_tallies_past_event_retention(store: Store) -> None:
    now = T0 + 100_000
    await store.tally_refusal(int(T0), "old", refusal(T0 + 1))
    await store.tally_refusal(int(T0), "old", refusal(T0 + 2))
    kept_minute = int(now - 600) // 60 * 60
    await store.tally_refusal(kept_minute, "new", refusal(now - 600))
    removed = await store.purge(now, 3600, 3600, event_horizon=86_400)
    assert removed == 1
    [t] = await store.list_refusal_tallies(T0, now)
    assert (t.key, t.count) == ("new", 1)


# -- alerts ---------------------------------------------------------------------------


async def test_alerts_put_replace_list(store: Store) -> None:
    a = Alert(
        id="burst:+4474",
        rule="burst",
        subject="+4474",
        status="open",
        opened_at=T0,
        updated_at=T0,
        message="120 starts in 60 s",
        details={"count": 120},
    )
    b = Alert(
        id="conversion:FR",
        rule="conversion",
        subject="FR",
        status="open",
        opened_at=T0 + 10,
        updated_at=T0 + 10,
    )
    await store.put_alert(a)
    await store.put_alert(b)
    assert await store.list_alerts() == [b, a]
    resolved = Alert(
        id=a.id,
        rule=a.rule,
        subject=a.subject,
        status="resolved",
        opened_at=a.opened_at,
        updated_at=T0 + 20,
        resolved_at=T0 + 20,
        message="back to normal",
        details={"count": 3},
    )
    await store.put_alert(resolved)
    assert await store.list_alerts() == [resolved, b]
    assert await store.list_alerts(status="open") == [b]
    assert await store.list_alerts(status="resolved") == [resolved]
    assert await store.list_alerts(since=T0 + 15) == [resolved]  # Choice: since is inclusive
    assert await store.list_alerts(since=T0 + 10, status="open") == [b]
    assert await store.list_alerts(since=T0 + 21) == []


# -- API keys -------------------------------------------------------------------------


async def test_api_keys(store: Store) -> None:
    """Choice: list_api_keys is oldest first; revoking twice or an unknown key is False."""
    k1 = ApiKey(id="ok_1", name="web", key_hash="kh1" * 10, scopes=("verify",), created_at=T0)
    k2 = ApiKey(
        id="ok_2", name="admin", key_hash="kh2" * 10, scopes=("verify", "admin"), created_at=T0 + 1
    )
    await store.create_api_key(k2)
    await store.create_api_key(k1)
    assert await store.get_api_key("ok_1") == k1
    assert await store.get_api_key("ok_404") is None
    assert await store.list_api_keys() == [k1, k2]
    assert await store.revoke_api_key("ok_1", T0 + 5) is True
    assert await store.revoke_api_key("ok_1", T0 + 6) is False
    assert await store.revoke_api_key("ok_404", T0 + 6) is False
    revoked = ApiKey(
        id="ok_1", name="web", key_hash=k1.key_hash, scopes=("verify",), created_at=T0,
        revoked_at=T0 + 5,
    )  # fmt: skip
    assert await store.get_api_key("ok_1") == revoked
    assert await store.list_api_keys() == [revoked, k2]


# -- maintenance ----------------------------------------------------------------------


async def test_purge_removes_exactly_the_stale(store: Store) -> None:
    now = T0 + 100_000
    stale_v = await stored(store, created_at=T0, ttl=600)  # expired at T0+600
    edge_v = await stored(store, created_at=now - 3600 - 600, ttl=600)  # expires_at == now - grace
    live_v = await stored(store, created_at=now - 60)
    # 2500 old rate entries: more than one purge batch in batching backends
    await store.hit([rule("r", "old", 10_000, window=3600)], now - 7200, cost=2500)
    await store.hit([rule("r", "edge", 10, window=3600)], now - 3600)  # ts == now - horizon
    await store.hit([rule("r", "new", 10, window=3600)], now - 10)
    events = [
        Event(type="t", ts=now - 90_000, id=f"{1:025x}"),
        Event(type="t", ts=now - 10, id=f"{2:025x}"),
    ]
    await store.add_events(events)
    await store.set_flag("gone", "x", now)  # until == now: past its time
    await store.set_flag("kept", "x", now + 1)

    removed = await store.purge(
        now, verification_grace=3600, rate_horizon=3600, event_horizon=86_400
    )
    assert removed == 1 + 2500 + 1 + 1
    assert await store.get_verification(stale_v.id) is None
    assert await store.get_verification(edge_v.id) == edge_v
    assert await store.get_verification(live_v.id) == live_v
    assert await store.count("old", 10**9, now) == 0
    assert await store.count("edge", 10**9, now) == 1
    assert await store.count("new", 10**9, now) == 1
    assert await store.list_events(EventQuery()) == [events[1]]
    assert await store.get_flag("kept", now) == "x"
    assert await store.purge(now, 3600, 3600, 86_400) == 0


async def test_dump_contains_stored_data(store: Store) -> None:
    v = await stored(store)
    await store.create_api_key(
        ApiKey(id="ok_1", name="web", key_hash="keyhash-5f2b", scopes=(), created_at=T0)
    )
    text = await dump_store(store)
    assert isinstance(text, str)
    assert v.code_hash in text
    assert v.id in text
    assert "keyhash-5f2b" in text
