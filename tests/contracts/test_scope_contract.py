"""A verification's scope (``Verification.service``, the /v2 service SID): stored with
the row by every way a row is written (``create_verification``, the one-call
``admit`` with a start) and read back by every read; and ``list_pending`` with
``any_status``, what the /v2 API narrows to a service."""

from __future__ import annotations

from otpguard.models import RateRule, Status
from otpguard.stores import Store

from .test_start_contract import start_of
from .test_store_contract import NUMBER, OTHER, T0, make_v, stored

SID = "VA" + "1" * 32


async def test_a_created_row_keeps_its_service(store: Store) -> None:
    scoped = await stored(store, service=SID)
    plain = await stored(store, created_at=T0 + 1)
    assert (await store.get_verification(scoped.id)) == scoped
    assert (await store.get_verification(plain.id)) == plain
    assert plain.service is None
    listed = await store.list_pending(NUMBER, T0 + 2, owner=None, limit=5)
    assert [(v.id, v.service) for v in listed] == [(plain.id, None), (scoped.id, SID)]


async def test_an_admitted_start_keeps_its_service(store: Store) -> None:
    s = start_of(make_v(service=SID, owner="key-a"))
    decision = await store.admit([RateRule("phone", f"phone:{NUMBER}", 5, 600)], [], T0, start=s)
    assert decision.allowed
    got = await store.get_verification(s.verification.id)
    assert got is not None and got.service == SID and got == s.verification
    # ... and through the rows every later operation returns
    ticket = await store.record_attempt(s.verification.id, 5, T0 + 1)
    assert ticket is not None and ticket.verification.service == SID
    moved = await store.transition(s.verification.id, [Status.PENDING], Status.CANCELED, T0 + 2)
    assert moved is not None and moved.service == SID


async def test_list_pending_any_status_keeps_the_final_unexpired_ones(store: Store) -> None:
    p1 = await stored(store, created_at=T0, service=SID)
    locked = await stored(store, created_at=T0 + 1, status=Status.MAX_ATTEMPTS_REACHED)
    approved = await stored(store, created_at=T0 + 2, status=Status.APPROVED, owner="key-a")
    await stored(store, created_at=T0 + 3, status=Status.CANCELED, ttl=5)  # expires at T0 + 8
    await stored(store, created_at=T0 + 4, status=Status.CANCELED, owner="key-b")
    await stored(store, to=OTHER, created_at=T0 + 5)
    now = T0 + 10
    assert await store.list_pending(NUMBER, now, owner="key-a", limit=5) == [p1]
    assert await store.list_pending(NUMBER, now, owner="key-a", limit=5, any_status=True) == [
        approved,
        locked,
        p1,
    ]
    assert await store.list_pending(NUMBER, now, owner="key-a", limit=2, any_status=True) == [
        approved,
        locked,
    ]
    assert await store.list_pending(NUMBER, T0 + 700, owner=None, limit=5, any_status=True) == []
