"""A scripted attack on a Verifier with the default settings.

Real users keep converting while an attacker pumps one number range from many
IPs (a returning customer in that range still logs in), walks another range from
one IP, hammers resend, floods one number and guesses codes. Each attack must be
stopped by the rule meant for it, before anything is sent, with the refusals
recorded as events.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from otpguard.clock import ManualClock
from otpguard.errors import DestinationRefused, OtpguardError, RateLimited
from otpguard.events import EventType
from otpguard.models import Status
from otpguard.phone import parse
from otpguard.service import Verifier
from otpguard.stats import load_activity
from otpguard.transports.memory import MemoryTransport

PUMPED = "+44740012"  # the range the attacker pumps
WALKED = "+44740034"  # the range the attacker walks
HAMMERED = "+447400555555"
FLOODED = "+447400777777"


def legit(i: int) -> str:
    e164 = f"+4475{i:04d}1234"
    assert parse(e164).type == "mobile"
    return e164


def lone_ip(i: int) -> str:
    """An IP in a /24 of its own: the attacker's botnet or a real user."""
    return f"10.{i // 250}.{i % 250}.1"


def wrong(code: str) -> str:
    return code[:-1] + str((int(code[-1]) + 1) % 10)


async def attempt(otp: Verifier, to: str, ip: str) -> str:
    """Start; return "sent" or what refused it."""
    try:
        await otp.start(to, client_ip=ip)
    except RateLimited as exc:
        return f"rate_limited:{exc.rule}"
    except DestinationRefused as exc:
        return exc.reason
    return "sent"


async def test_scripted_attack(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    otp = verifier

    # Real users, each typing their code: the country converts well.
    for i in range(20):
        v = await otp.start(legit(i), client_ip=lone_ip(1000 + i))
        assert (await otp.check(outbox.last_code(), verification_id=v.id)).valid

    # A customer whose number lies in the range about to be pumped logs in.
    returning = f"{PUMPED}9000"
    v = await otp.start(returning, client_ip=lone_ip(1900))
    assert (await otp.check(outbox.last_code(), verification_id=v.id)).valid

    # 1. Pumping one range from a botnet, one number per IP. Nobody types these codes:
    #    the block's admission bucket (12 unconverted sends, decaying over 12 h) cuts
    #    the pump off after 12; two hours later it has room for one more.
    burst1 = [await attempt(otp, f"{PUMPED}{i:04d}", lone_ip(i)) for i in range(40)]
    assert Counter(burst1) == {"sent": 12, "rate_limited:block": 28}
    # Two hours later 12 * e^(-2/12) = 10.2 unconverted sends are left, and the
    # allowance is 12 + 0.5 x the customer's decayed approval (12.4): room for two.
    clock.advance(7200)
    burst2 = [await attempt(otp, f"{PUMPED}{i:04d}", lone_ip(i)) for i in range(40, 50)]
    assert burst2 == ["sent"] * 2 + ["rate_limited:block"] * 8
    # The returning customer is trusted: the pump does not lock them out.
    assert await attempt(otp, returning, lone_ip(1901)) == "sent"

    # 2. Walking another range from one IP: the fifth distinct number is refused.
    walk = [await attempt(otp, f"{WALKED}{i:04d}", "203.0.113.66") for i in range(10)]
    assert walk == ["sent"] * 4 + ["fraud:sequential_numbers"] * 6

    # 3. Hammering resend: the cooldown grows, then the number's limit holds.
    v = await otp.start(HAMMERED, client_ip="198.51.100.10")
    cooldowns = 0
    for wait in (30, 60, 120):
        for _ in range(5):
            with pytest.raises(RateLimited) as err:
                await otp.resend(v.id)
            assert err.value.rule == "cooldown" and err.value.retry_after == wait
            cooldowns += 1
        clock.advance(wait)
        if wait < 120:
            v = await otp.resend(v.id)
    with pytest.raises(RateLimited) as err:
        await otp.resend(v.id)
    assert err.value.rule == "phone"
    assert len(outbox.sent_to(HAMMERED)) == 3

    # 4. A flood on one number from fifty IPs at once: exactly three messages.
    flood = await asyncio.gather(
        *(otp.start(FLOODED, client_ip=lone_ip(200 + i)) for i in range(50)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, RateLimited) and r.rule == "phone" for r in flood) == 47
    assert len(outbox.sent_to(FLOODED)) == 3

    # 5. Guessing codes across the flooded number's verifications: five wrong codes
    #    lock a verification, ten wrong codes lock the number for an hour.
    pending = [r for r in flood if not isinstance(r, BaseException)]
    assert len(pending) == 3
    outcomes: Counter[str] = Counter()
    for target in pending:
        for _ in range(5):
            guess = wrong(outbox.last_code(FLOODED))
            try:
                r = await otp.check(guess, verification_id=target.id, client_ip="203.0.113.99")
                outcomes["wrong"] += not r.valid
            except OtpguardError as exc:
                outcomes[f"{exc.code}:{getattr(exc, 'rule', '')}"] += 1
    assert outcomes == {"wrong": 10, "rate_limited:failed_checks": 5}
    statuses = [(await otp.get(t.id)).status for t in pending]
    assert sorted(statuses) == sorted([Status.MAX_ATTEMPTS_REACHED] * 2 + [Status.PENDING])

    # Real users elsewhere are still served; the pumped range is not.
    await otp.start(legit(500), client_ip=lone_ip(1500))
    with pytest.raises(RateLimited) as refused:
        await otp.start(f"{PUMPED}9999", client_ip=lone_ip(1501))
    assert refused.value.rule == "block" and f"block {PUMPED}" in refused.value.message

    # What the events say happened.
    # Repeated refusals are counted per minute, not stored: load_activity adds them back.
    events, _ = await load_activity(otp.store, 0, otp.clock() + 1)
    refusals: Counter[tuple[str | None, str | None]] = Counter()
    for e in events:
        if e.type == EventType.REFUSED.value:
            refusals[(e.reason, e.rule)] += e.count
    assert refusals == {
        ("rate_limited", "block"): 28 + 8 + 1,
        ("fraud:sequential_numbers", "sequential_numbers"): 6,
        ("rate_limited", "cooldown"): cooldowns,
        ("rate_limited", "phone"): 1 + 47,
        ("rate_limited", "failed_checks"): 5,
    }
    types = Counter(e.type for e in events)
    assert types[EventType.SENT.value] == 20 + 1 + 14 + 1 + 4 + 1 + 3 + 1
    assert types[EventType.RESENT.value] == 2
    assert types[EventType.CHECK_PASSED.value] == 20 + 1
    assert types[EventType.CHECK_FAILED.value] == 10
    assert types[EventType.LOCKED.value] == 2
    assert types[EventType.FRAUD_SUSPENDED.value] == 0
    assert types[EventType.FRAUD_SHADOW.value] == 0
    assert len(outbox.outbox) == 20 + 1 + 14 + 1 + 4 + 3 + 3 + 1
    # Every attacker refusal names the client it came from.
    assert all(e.client_ip not in (None, "unknown") for e in events if e.type == "request.refused")
