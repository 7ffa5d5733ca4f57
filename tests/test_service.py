"""The Verifier's rules: start, resend, check, cancel, expiry, attempts, exactly-once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from otpguard.clock import ManualClock
from otpguard.codes import Keyring, new_secret_hex
from otpguard.config import Settings
from otpguard.errors import (
    Conflict,
    DeliveryError,
    InvalidPhoneNumber,
    InvalidRequest,
    NotFound,
    RateLimited,
)
from otpguard.models import Status
from otpguard.service import Verifier
from otpguard.stores import store_from_url
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE
from .dump import dump_store


def wrong(code: str) -> str:
    """A well-formed code that differs from ``code`` in its last digit."""
    return code[:-1] + str((int(code[-1]) + 1) % 10)


async def test_start_sends_a_code_and_returns_no_code(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start("07400 123456", "sms", client_ip="203.0.113.7")
    assert v.status is Status.PENDING
    assert v.to == UK_MOBILE
    assert len(outbox.outbox) == 1
    code = outbox.last_code(UK_MOBILE)
    assert len(code) == 6 and code.isdigit()
    assert code not in repr(v) and code not in v.code_hash
    assert v.expires_at - v.created_at == 300


async def test_right_code_approves_exactly_once(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE)
    code = outbox.last_code()
    first = await verifier.check(code, verification_id=v.id)
    second = await verifier.check(code, verification_id=v.id)
    assert (first.valid, first.status) == (True, Status.APPROVED)
    assert (second.valid, second.status) == (False, Status.APPROVED)
    assert (await verifier.get(v.id)).status is Status.APPROVED


async def test_check_by_number_tries_each_pending_newest_first(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    old = await verifier.start(UK_MOBILE)
    old_code = outbox.last_code()
    clock.advance(1)
    new = await verifier.start("+44 7400 123456")
    new_code = outbox.last_code()
    assert old.id != new.id
    r = await verifier.check(new_code, to="07400123456")
    assert r.valid and r.verification.id == new.id
    if old_code != new_code:
        r = await verifier.check(old_code, to=UK_MOBILE)
        assert r.valid and r.verification.id == old.id


async def test_five_wrong_codes_lock_even_the_right_one(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE)
    code = outbox.last_code()
    remaining = []
    for _ in range(5):
        r = await verifier.check(wrong(code), verification_id=v.id)
        assert not r.valid
        remaining.append(r.attempts_remaining)
    assert remaining == [4, 3, 2, 1, 0]
    assert r.status is Status.MAX_ATTEMPTS_REACHED
    r = await verifier.check(code, verification_id=v.id)
    assert (r.valid, r.status) == (False, Status.MAX_ATTEMPTS_REACHED)


async def test_fifth_attempt_may_still_be_right(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE)
    code = outbox.last_code()
    for _ in range(4):
        await verifier.check(wrong(code), verification_id=v.id)
    assert (await verifier.check(code, verification_id=v.id)).valid


async def test_expired_code_never_approves(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    v = await verifier.start(UK_MOBILE)
    code = outbox.last_code()
    clock.advance(299)
    assert (await verifier.get(v.id)).status is Status.PENDING
    clock.advance(1)
    r = await verifier.check(code, verification_id=v.id)
    assert (r.valid, r.status) == (False, Status.EXPIRED)
    assert (await verifier.get(v.id)).status is Status.EXPIRED
    with pytest.raises(NotFound):
        await verifier.check(code, to=UK_MOBILE)


async def test_get_marks_overdue_verifications_expired(
    verifier: Verifier, clock: ManualClock
) -> None:
    v = await verifier.start(UK_MOBILE)
    clock.advance(301)
    assert (await verifier.get(v.id)).status is Status.EXPIRED
    with pytest.raises(Conflict):
        await verifier.resend(v.id)


async def test_resend_cooldown_fresh_code_and_attempts_kept(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    v = await verifier.start(UK_MOBILE)
    first = outbox.last_code()
    await verifier.check(wrong(first), verification_id=v.id)
    clock.advance(10)
    with pytest.raises(RateLimited) as exc:
        await verifier.resend(v.id)
    assert exc.value.rule == "cooldown" and exc.value.retry_after == 20
    clock.advance(20)
    v2 = await verifier.resend(v.id)
    second = outbox.last_code()
    assert second != first
    assert v2.attempts == 1 and v2.sends == 2
    assert v2.resend_available_at - clock() == 60  # the cooldown grows: 30, 60, 120, ...
    r = await verifier.check(first, verification_id=v.id)
    assert not r.valid and r.attempts_remaining == 3
    assert (await verifier.check(second, verification_id=v.id)).valid


async def test_resend_gives_a_fresh_lifetime(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    v = await verifier.start(UK_MOBILE)
    clock.advance(250)
    v2 = await verifier.resend(v.id)
    assert v2.expires_at == clock() + 300
    code = outbox.last_code()
    clock.advance(100)  # past the first code's expiry, inside the second's
    assert (await verifier.check(code, verification_id=v.id)).valid


async def test_cancel(verifier: Verifier, outbox: MemoryTransport) -> None:
    v = await verifier.start(UK_MOBILE)
    code = outbox.last_code()
    assert (await verifier.cancel(v.id)).status is Status.CANCELED
    assert (await verifier.cancel(v.id)).status is Status.CANCELED  # idempotent
    r = await verifier.check(code, verification_id=v.id)
    assert (r.valid, r.status) == (False, Status.CANCELED)
    with pytest.raises(Conflict):
        await verifier.resend(v.id)


async def test_cancel_after_approval_is_a_conflict(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE)
    await verifier.check(outbox.last_code(), verification_id=v.id)
    with pytest.raises(Conflict) as exc:
        await verifier.cancel(v.id)
    assert exc.value.reason == "approved"


@pytest.mark.parametrize(
    "bad", ["12345", "1234567", "12a456", "١٢٣٤٥٦", "１２３４５６", " 12345", "", "123 56"]
)
async def test_malformed_codes_are_refused_and_not_counted(
    verifier: Verifier, outbox: MemoryTransport, bad: str
) -> None:
    v = await verifier.start(UK_MOBILE)
    with pytest.raises(InvalidRequest):
        await verifier.check(bad, verification_id=v.id)
    assert (await verifier.get(v.id)).attempts == 0


async def test_unknown_ids_and_numbers(verifier: Verifier) -> None:
    with pytest.raises(NotFound):
        await verifier.check("123456", verification_id="VEnope")
    with pytest.raises(NotFound):
        await verifier.get("VEnope")
    with pytest.raises(NotFound):
        await verifier.cancel("x" * 500)
    with pytest.raises(InvalidPhoneNumber):
        await verifier.start("not a number")
    with pytest.raises(InvalidRequest):
        await verifier.start(UK_MOBILE, "pigeon")
    with pytest.raises(InvalidRequest):
        await verifier.start(UK_MOBILE, client_ip="999.1.1.1")


async def test_delivery_failure_marks_failed(verifier: Verifier, outbox: MemoryTransport) -> None:
    outbox.fail_with = DeliveryError("provider_error", provider_code=30008)
    with pytest.raises(DeliveryError):
        await verifier.start(UK_MOBILE)
    events = await verifier.store.list_events(
        __import__("otpguard.stores", fromlist=["EventQuery"]).EventQuery()
    )
    failed = [e for e in events if e.type == "verification.delivery_failed"]
    assert len(failed) == 1 and failed[0].provider_code == 30008
    assert failed[0].verification_id is not None
    v = await verifier.get(failed[0].verification_id)
    assert v.status is Status.FAILED


async def test_code_length_setting(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> None:
    s = settings_factory(code_length=8)
    async with Verifier(s, store_from_url(s.store_url), outbox, clock=clock) as v:
        ver = await v.start(UK_MOBILE)
        code = outbox.last_code()
        assert len(code) == 8
        with pytest.raises(InvalidRequest):
            await v.check(code[:6], verification_id=ver.id)
        assert (await v.check(code, verification_id=ver.id)).valid


async def test_key_rotation_keeps_live_codes(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    tmp_path: Path,
) -> None:
    old, new = new_secret_hex(), new_secret_hex()
    url = f"sqlite:///{tmp_path / 'rot.db'}"
    s1 = settings_factory(store=url, secret_keys=[old])
    async with Verifier(s1, store_from_url(url), outbox, clock=clock) as v1:
        a = await v1.start(UK_MOBILE)
        code_a = outbox.last_code()
        b = await v1.start("+447400123457")
        code_b = outbox.last_code()
    s2 = settings_factory(store=url, secret_keys=[new, old])
    async with Verifier(s2, store_from_url(url), outbox, clock=clock) as v2:
        assert (await v2.check(code_a, verification_id=a.id)).valid
        c = await v2.start("+447400123458")
        assert c.key_id == Keyring.from_hex([new]).signing_key_id
    s3 = settings_factory(store=url, secret_keys=[new])
    async with Verifier(s3, store_from_url(url), outbox, clock=clock) as v3:
        r = await v3.check(code_b, verification_id=b.id)  # signed by a retired key
        assert not r.valid


async def test_concurrent_correct_checks_approve_exactly_once(
    settings_factory: Callable[..., Settings],
    clock: ManualClock,
    outbox: MemoryTransport,
    tmp_path: Path,
) -> None:
    s = settings_factory(store=f"sqlite:///{tmp_path / 'race.db'}")
    async with Verifier(s, store_from_url(s.store_url), outbox, clock=clock) as v:
        for n in range(5):
            ver = await v.start(f"+44740012345{n}")
            code = outbox.last_code()
            results = await asyncio.gather(
                *(v.check(code, verification_id=ver.id) for _ in range(10))
            )
            assert sum(r.valid for r in results) == 1
            # the losers saw it approved, or pending with no attempt left while it was in flight
            assert all(r.status in (Status.APPROVED, Status.PENDING) for r in results)
            assert (await v.get(ver.id)).status is Status.APPROVED


async def test_racing_wrong_and_right_checks_never_exceed_the_cap(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    v = await verifier.start(UK_MOBILE)
    code = outbox.last_code()
    checks = [verifier.check(wrong(code), verification_id=v.id) for _ in range(8)]
    results = await asyncio.gather(*checks, verifier.check(code, verification_id=v.id))
    after = await verifier.get(v.id)
    assert after.attempts <= 5
    assert sum(r.valid for r in results) <= 1
    # if the right code was counted within the cap it approved; otherwise the lock held
    assert after.status in (Status.APPROVED, Status.MAX_ATTEMPTS_REACHED)


async def test_store_holds_no_code(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    for n in range(5):
        v = await verifier.start(f"+44740012345{n}")
        clock.advance(31)
        await verifier.resend(v.id)
        await verifier.check(wrong(outbox.last_code()), verification_id=v.id)
    dump = await dump_store(verifier.store)
    assert dump  # the dump is real: it holds the verifications
    for msg in outbox.outbox:
        assert msg.code not in dump


async def test_purge_keeps_the_store_proportional_to_live_traffic(
    verifier: Verifier, clock: ManualClock
) -> None:
    old = [await verifier.start(f"+4474{n:02d}123456") for n in range(3)]
    clock.advance(300 + 3600 + 1)  # expired, and past the grace period
    live = await verifier.start("+447499123456")
    removed = await verifier.purge()
    assert removed >= 3
    for v in old:
        with pytest.raises(NotFound):
            await verifier.get(v.id)
    assert (await verifier.get(live.id)).status is Status.PENDING
    assert await verifier.purge() == 0  # nothing stale left


async def test_delivery_report_with_an_undeliverable_code_blocks_resends_for_a_while(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    from otpguard.errors import DestinationRefused

    v = await verifier.start(UK_MOBILE)
    sid = "MM00000001"  # the memory transport's id for its first message
    await verifier.record_delivery_status(v.id, "undelivered", 21610, sid)
    with pytest.raises(DestinationRefused) as exc:
        await verifier.start(UK_MOBILE)
    assert exc.value.reason == "undeliverable"
    assert len(outbox.outbox) == 1
    clock.advance(86400)
    await verifier.start(UK_MOBILE)
    assert len(outbox.outbox) == 2


async def test_undeliverable_number_is_remembered_after_a_failed_send(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    from otpguard.errors import DestinationRefused

    outbox.fail_with = DeliveryError("invalid_number", provider_code=21211)
    with pytest.raises(DeliveryError):
        await verifier.start(UK_MOBILE)
    outbox.fail_with = None
    with pytest.raises(DestinationRefused) as exc:
        await verifier.start(UK_MOBILE)
    assert exc.value.reason == "undeliverable"
    # a generic provider error is not remembered
    outbox.fail_with = DeliveryError("provider_error", provider_code=30008)
    with pytest.raises(DeliveryError):
        await verifier.start("+447400123499")
    outbox.fail_with = None
    await verifier.start("+447400123499")


async def test_scheduled_maintenance_purges(verifier: Verifier, clock: ManualClock) -> None:
    old = await verifier.start(UK_MOBILE)
    clock.advance(300 + 3600 + 1)
    stop = asyncio.Event()
    job = asyncio.create_task(verifier.run_maintenance(stop))
    try:
        for _ in range(20):  # yield to the job until its first purge has run
            if await verifier.store.get_verification(old.id) is None:
                break
            await asyncio.sleep(0)
        assert await verifier.store.get_verification(old.id) is None
    finally:
        stop.set()
        await asyncio.wait_for(job, timeout=5)


def test_unreadable_dev_allowed_numbers_stop_start_up(
    settings_factory: Callable[..., Settings], outbox: MemoryTransport
) -> None:
    from otpguard.errors import ConfigError

    s = settings_factory(dev_allowed_numbers=["+447400123456", "not a number"])
    with pytest.raises(ConfigError, match="OTPGUARD_DEV_ALLOWED_NUMBERS"):
        Verifier(s, store_from_url(s.store_url), outbox)
