"""Admission under pressure with a challenge provider (``OTPGUARD_CHALLENGE_MODE``
``pressure``, the default once a provider is set), against the fake siteverify server:
unproven numbers are challenged before a scope's room runs out, a passed challenge
admits despite the buckets, each token admits one start, trusted numbers are never
challenged. Codes are read from the memory outbox."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from otpguard.errors import ChallengeRequired, OtpguardError, RateLimited
from otpguard.events import EventType
from otpguard.service import Verifier
from otpguard.stores import EventQuery
from otpguard.transports.memory import MemoryTransport

from .fake_siteverify import SITE_KEY, FakeSiteverify, fake_siteverify
from .test_admission import BLOCK, in_block, login, lone_ip, spread

__all__ = ["fake_siteverify"]  # the fixture, re-exported for pytest

VerifierFactory = Callable[..., Any]


async def answer(otp: Verifier, to: str, ip: str, **kw: Any) -> str:
    try:
        await otp.start(to, client_ip=ip, **kw)
    except ChallengeRequired as exc:
        return exc.reason
    except RateLimited as exc:
        return f"rate_limited:{exc.rule}"
    return "sent"


async def test_pressure_challenges_before_the_room_runs_out(
    verifier_factory: VerifierFactory, fake_siteverify: FakeSiteverify
) -> None:
    async with verifier_factory(**fake_siteverify.settings()) as otp:
        # The block's base is 12; its soft line is 80 % of it: 9 sends, then challenges.
        results = [await answer(otp, in_block(i), lone_ip(i)) for i in range(12)]
        assert results == ["sent"] * 9 + ["challenge_required"] * 3
        with pytest.raises(ChallengeRequired) as err:
            await otp.start(in_block(20), client_ip=lone_ip(20))
        assert err.value.status == 428 and err.value.scope == f"block {BLOCK}"
        assert err.value.challenge == {"provider": "turnstile", "site_key": SITE_KEY}
        [event, *_] = await otp.store.list_events(
            EventQuery(types=(EventType.REFUSED.value,), limit=1)
        )
        assert (event.reason, event.rule) == ("challenge_required", "block")
        assert event.details["scope"] == f"block {BLOCK}" and event.details["unconverted"] == 9
        assert fake_siteverify.requests == []  # nobody asked the provider yet


async def test_a_passed_challenge_admits_despite_the_buckets(
    verifier_factory: VerifierFactory, fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with verifier_factory(**fake_siteverify.settings()) as otp:
        for i in range(12):
            await answer(otp, in_block(i), lone_ip(i))
        # Past the soft line and past the hard one (12): a person who passes is served.
        for i in range(12, 16):
            token = fake_siteverify.issue()
            assert await answer(otp, in_block(i), lone_ip(i), challenge_token=token) == "sent"
        assert len(outbox.outbox) == 9 + 4
        # The phone's own limit still holds for them (3/10m).
        for _ in range(2):
            await otp.start(
                in_block(12), client_ip=lone_ip(12), challenge_token=fake_siteverify.issue()
            )
        with pytest.raises(RateLimited) as err:
            await otp.start(
                in_block(12), client_ip=lone_ip(12), challenge_token=fake_siteverify.issue()
            )
        assert err.value.rule == "phone"


async def test_a_failed_challenge_is_asked_again(
    verifier_factory: VerifierFactory, fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with verifier_factory(**fake_siteverify.settings()) as otp:
        for i in range(9):
            await answer(otp, in_block(i), lone_ip(i))
        forged = await answer(otp, in_block(9), lone_ip(9), challenge_token="XXXX.FAKE.forged")
        assert forged == "challenge_failed"
        assert len(outbox.outbox) == 9


async def test_each_token_admits_one_start_even_if_the_provider_allows_reuse(
    verifier_factory: VerifierFactory, fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    fake_siteverify.reuse_allowed = True
    async with verifier_factory(**fake_siteverify.settings()) as otp:
        for i in range(9):
            await answer(otp, in_block(i), lone_ip(i))
        token = fake_siteverify.issue()
        results = await asyncio.gather(
            *(answer(otp, in_block(100 + i), lone_ip(100 + i), challenge_token=token)
              for i in range(8))
        )  # fmt: skip
        assert Counter(results) == {"sent": 1, "challenge_failed": 7}
        assert len(outbox.outbox) == 9 + 1


async def test_trusted_numbers_are_never_challenged(
    verifier_factory: VerifierFactory, fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with verifier_factory(**fake_siteverify.settings()) as otp:
        customer = in_block(9000)
        await login(otp, outbox, customer, lone_ip(900))
        for i in range(12):
            await answer(otp, in_block(i), lone_ip(i))
        assert await answer(otp, customer, lone_ip(901)) == "sent"
        assert fake_siteverify.requests == []


async def test_without_pressure_nobody_is_challenged(
    verifier_factory: VerifierFactory, fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with verifier_factory(**fake_siteverify.settings()) as otp:
        rng = random.Random(4)
        for i in range(30):  # real users spread over the country, typing their codes
            await login(otp, outbox, spread(rng), lone_ip(i))
        assert fake_siteverify.requests == []


async def test_a_spread_pump_is_challenged_and_people_pass(
    verifier_factory: VerifierFactory, fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    """The attacker cannot pass a challenge: once the country is under pressure it gets
    nothing more, while a person who passes the challenge is served."""
    async with verifier_factory(**fake_siteverify.settings()) as otp:
        rng = random.Random(9)
        pump = Counter([await answer(otp, spread(rng), lone_ip(i)) for i in range(100)])
        assert pump == {"sent": 64, "challenge_required": 36}  # 80 % of the country's 80
        person = spread(rng)
        assert await answer(otp, person, lone_ip(500)) == "challenge_required"
        assert (
            await answer(otp, person, lone_ip(500), challenge_token=fake_siteverify.issue())
            == "sent"
        )


async def test_a_provider_outage_under_pressure_sends_nothing(
    verifier_factory: VerifierFactory, fake_siteverify: FakeSiteverify, outbox: MemoryTransport
) -> None:
    async with verifier_factory(
        **fake_siteverify.settings(challenge_verify_url=FakeSiteverify.down_url())
    ) as otp:
        for i in range(9):
            await answer(otp, in_block(i), lone_ip(i))
        with pytest.raises(OtpguardError) as err:
            await otp.start(in_block(9), client_ip=lone_ip(9), challenge_token="XXXX.FAKE.t")
        assert err.value.status == 503
        assert len(outbox.outbox) == 9
