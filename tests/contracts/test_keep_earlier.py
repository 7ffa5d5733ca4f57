"""On every backend: a resend that keeps the earlier codes (``keep_earlier``, the
/v2 API's resend) stores one tag per send through the existing store operations
(``replace_code``, ``approve``), and every code sent checks until the first
send's expiry, once."""

from __future__ import annotations

import asyncio

import pytest

from otpguard import tags
from otpguard.clock import ManualClock
from otpguard.codes import new_secret_hex
from otpguard.config import load_settings
from otpguard.errors import RateLimited
from otpguard.models import AttemptOutcome, AttemptTicket, Status, Verification
from otpguard.purpose import bind
from otpguard.service import Verifier
from otpguard.stores import Store
from otpguard.stores.opening import CheckOpened, Opened, carried_out
from otpguard.transports.memory import MemoryTransport

from ..dump import dump_store

UK = "+447400123456"


def _verifier(
    store: Store, clock: ManualClock, outbox: MemoryTransport, **extra: object
) -> Verifier:
    settings = load_settings(
        env={}, secret_keys=[new_secret_hex()], transport="memory", log_events=False,
        failed_check_floor=0.0, **extra,
    )  # fmt: skip
    return Verifier(settings, store, outbox, clock=clock)


async def test_every_code_sent_checks_until_the_first_expiry(store: Store) -> None:
    clock, outbox = ManualClock(), MemoryTransport()
    otp = _verifier(store, clock, outbox)
    v = await otp.start(UK)
    clock.advance(30)
    v2 = await otp.resend(v.id, keep_earlier=True)
    assert (v2.id, v2.sends, v2.expires_at) == (v.id, 2, v.expires_at)  # no new lifetime
    assert len(tags.tags_of(await otp.get(v.id))) == 2
    first, second = (m.code for m in outbox.outbox)
    assert first != second
    result = await otp.check(first, verification_id=v.id)
    assert result.valid and result.status is Status.APPROVED
    again = await otp.check(second, verification_id=v.id)
    assert not again.valid  # approved once, for good
    dump = await dump_store(store)
    assert first not in dump and second not in dump


async def test_codes_expire_with_the_verification(store: Store) -> None:
    clock, outbox = ManualClock(), MemoryTransport()
    otp = _verifier(store, clock, outbox)
    v = await otp.start(UK)
    clock.advance(290)
    await otp.resend(v.id, keep_earlier=True)
    assert outbox.outbox[-1].ttl_seconds == 10
    clock.advance(10)
    for message in outbox.outbox:
        assert not (await otp.check(message.code, verification_id=v.id)).valid
    assert (await otp.get(v.id)).status is Status.EXPIRED


async def test_five_codes_at_most(store: Store) -> None:
    clock, outbox = ManualClock(), MemoryTransport()
    otp = _verifier(store, clock, outbox, resend_cooldown=0, limit_phone="10/10m")
    v = await otp.start(UK)
    for _ in range(tags.MAX_TAGS - 1):
        await otp.resend(v.id, keep_earlier=True)
    with pytest.raises(RateLimited) as exc:
        await otp.resend(v.id, keep_earlier=True)
    assert exc.value.rule == "max_sends" and len(outbox.outbox) == tags.MAX_TAGS
    assert (await otp.check(outbox.outbox[2].code, verification_id=v.id)).valid


async def test_a_resend_between_comparison_and_approval_keeps_the_right_code(
    store: Store,
) -> None:
    """A check compared against the tags of one send; a resend that kept them added
    another before the approval: the right code still approves (and a plain resend,
    which replaces the code, does not)."""
    clock, outbox = ManualClock(), MemoryTransport()
    otp = _verifier(store, clock, outbox, resend_cooldown=0)

    async def approved_after(compared: Verification, code: str) -> bool:
        """The check's judge and store steps, the code compared with ``compared``'s
        tags (as read before the resend)."""
        ticket = AttemptTicket(AttemptOutcome.COUNTED, compared)
        opened = CheckOpened(Opened.OPENED, compared, ticket=ticket)
        verdict = otp._verdict(code, bind(None), "192.0.2.1", clock(), lambda _: [], opened,
                               give_back=False)  # fmt: skip
        assert verdict.settlement is not None  # the code is right for these tags
        return (await carried_out(otp.store, opened, verdict, clock())).approved

    v = await otp.start(UK)
    compared, code = await otp.get(v.id), outbox.last_code()
    await otp.resend(v.id, keep_earlier=True)
    assert await approved_after(compared, code)
    w = await otp.start("+447400123457")
    compared, code = await otp.get(w.id), outbox.last_code()
    await otp.resend(w.id)  # replaces the code
    assert not await approved_after(compared, code)


async def test_concurrent_resends_drop_no_code_that_was_sent(store: Store) -> None:
    """Resends racing with no cooldown: each one that delivers a code keeps it (its
    tag is added to what it read, compare-and-set), a loser is refused before it
    sends, so every code a phone received is among the tags."""
    clock, outbox = ManualClock(), MemoryTransport()
    otp = _verifier(store, clock, outbox, resend_cooldown=0, limit_phone="100/10m")
    v = await otp.start(UK)
    results = await asyncio.gather(
        *(otp.resend(v.id, keep_earlier=True) for _ in range(4)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, RateLimited) for r in refused), refused
    stored = await otp.get(v.id)
    assert len(outbox.outbox) == 1 + len(results) - len(refused)
    assert len(tags.tags_of(stored)) == len(outbox.outbox) == stored.sends
    assert (await otp.check(outbox.outbox[-1].code, verification_id=v.id)).valid
