"""Admission through the Verifier: each scope's allow and refuse side, the refund on
approval, trusted returning numbers, per API key and per account, and busy traffic.

Every test runs on the injected clock; codes are read from the memory outbox."""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from otpguard.clock import ManualClock
from otpguard.errors import DestinationRefused, InvalidRequest, OtpguardError, RateLimited
from otpguard.events import EventType
from otpguard.phone import parse
from otpguard.service import Verifier
from otpguard.stores import EventQuery
from otpguard.transports.memory import MemoryTransport

from .dump import dump_store

VerifierFactory = Callable[..., Any]
BLOCK = "+44740012"  # a block of 10,000 numbers
OFF = "off"


def in_block(i: int, block: str = BLOCK) -> str:
    return f"{block}{i:04d}"


def lone_ip(i: int) -> str:
    """An IP in a /24 of its own: no per-IP or per-network rule links two sends."""
    return f"10.{(i // 250) % 250}.{i % 250}.1"


def spread(rng: random.Random) -> str:
    """A random valid GB mobile anywhere in +44 7xxx: a pump spread over a country."""
    while True:
        e164 = f"+447{rng.randrange(10**9):09d}"
        try:
            number = parse(e164)
        except InvalidRequest:
            continue
        if number.type == "mobile" and number.region == "GB":
            return e164


async def outcome(otp: Verifier, to: str, ip: str, **kw: Any) -> str:
    try:
        await otp.start(to, client_ip=ip, **kw)
    except RateLimited as exc:
        return f"rate_limited:{exc.rule}"
    except DestinationRefused as exc:
        return exc.reason
    return "sent"


async def login(otp: Verifier, outbox: MemoryTransport, to: str, ip: str, **kw: Any) -> None:
    v = await otp.start(to, client_ip=ip, **kw)
    assert (await otp.check(outbox.last_code(to), verification_id=v.id)).valid


# -- number blocks ------------


async def test_a_block_nobody_converts_is_cut_off(verifier: Verifier) -> None:
    results = [await outcome(verifier, in_block(i), lone_ip(i)) for i in range(30)]
    assert Counter(results) == {"sent": 12, "rate_limited:block": 18}
    [event, *_] = await verifier.store.list_events(
        EventQuery(types=(EventType.REFUSED.value,), limit=1)
    )
    assert (event.reason, event.rule) == ("rate_limited", "block")
    assert event.details["scope"] == f"block {BLOCK}"
    assert event.details["unconverted"] == 12
    assert event.details["retry_after"] > 0


async def test_the_refusal_says_why_and_what_would_admit(verifier: Verifier) -> None:
    for i in range(12):
        await verifier.start(in_block(i), client_ip=lone_ip(i))
    with pytest.raises(RateLimited) as err:
        await verifier.start(in_block(12), client_ip=lone_ip(12))
    assert err.value.status == 429 and err.value.rule == "block"
    assert f"block {BLOCK} is under pressure" in err.value.message
    assert "OTPGUARD_CHALLENGE_PROVIDER" in err.value.message


async def test_a_block_that_converts_keeps_flowing(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    for i in range(60):  # five times the block's base, every code typed
        await login(verifier, outbox, in_block(i), lone_ip(i))
    assert len(outbox.outbox) == 60


async def test_neighbouring_blocks_are_seen_as_one(verifier: Verifier) -> None:
    """A pump spread over the ten 10,000-blocks of one 100,000-block: each block stays
    under its own base (12), the 100,000-block's base (30) cuts it off."""
    results = [await outcome(verifier, f"+4474001{i % 10}{i:04d}", lone_ip(i)) for i in range(60)]
    assert Counter(results) == {"sent": 30, "rate_limited:block": 30}


async def test_the_cut_off_block_recovers_as_its_level_decays(
    verifier: Verifier, clock: ManualClock
) -> None:
    for i in range(12):
        await verifier.start(in_block(i), client_ip=lone_ip(i))
    assert await outcome(verifier, in_block(12), lone_ip(12)) == "rate_limited:block"
    clock.advance(2 * 3600)  # 12 e^(-1/6) = 10.2: room for one
    assert await outcome(verifier, in_block(13), lone_ip(13)) == "sent"
    assert await outcome(verifier, in_block(14), lone_ip(14)) == "rate_limited:block"


# -- the refund and the earned room ------------


async def test_an_approval_gives_its_room_back(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(admission_block_4="2/12h", admission_share=0.0) as otp:
        first = await otp.start(in_block(0), client_ip=lone_ip(0))
        code = outbox.last_code()
        await otp.start(in_block(1), client_ip=lone_ip(1))
        assert await outcome(otp, in_block(2), lone_ip(2)) == "rate_limited:block"
        assert (await otp.check(code, verification_id=first.id)).valid  # the refund
        assert await outcome(otp, in_block(2), lone_ip(2)) == "sent"
        assert await outcome(otp, in_block(3), lone_ip(3)) == "rate_limited:block"


async def test_approvals_earn_room_beyond_the_base(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(admission_block_4="2/12h", admission_share=0.5) as otp:
        for i in range(4):  # four approvals: level 0, earned 4 -> allowance 2 + 2
            await login(otp, outbox, in_block(i), lone_ip(i))
        results = [await outcome(otp, in_block(10 + i), lone_ip(10 + i)) for i in range(6)]
        assert results == ["sent"] * 4 + ["rate_limited:block"] * 2


async def test_resends_count_and_are_refunded_together(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(admission_block_4="3/12h", admission_share=0.0) as otp:
        v = await otp.start(in_block(0), client_ip=lone_ip(0))
        clock.advance(30)
        v = await otp.resend(v.id)
        await otp.start(in_block(1), client_ip=lone_ip(1))
        assert await outcome(otp, in_block(2), lone_ip(2)) == "rate_limited:block"
        assert (await otp.check(outbox.last_code(in_block(0)), verification_id=v.id)).valid
        # two sends given back
        assert await outcome(otp, in_block(2), lone_ip(2)) == "sent"
        assert await outcome(otp, in_block(3), lone_ip(3)) == "sent"
        assert await outcome(otp, in_block(4), lone_ip(4)) == "rate_limited:block"


# -- countries, all traffic, API keys, accounts ------------


async def test_a_spread_pump_is_cut_off_by_its_country(verifier: Verifier) -> None:
    rng = random.Random(7)
    results = Counter([await outcome(verifier, spread(rng), lone_ip(i)) for i in range(100)])
    assert results == {"sent": 80, "rate_limited:country": 20}


async def test_each_api_key_has_its_own_room(verifier_factory: VerifierFactory) -> None:
    rng = random.Random(3)
    async with verifier_factory(admission_api_key="5/8h") as otp:
        a = [await outcome(otp, spread(rng), lone_ip(i), owner="og_a") for i in range(7)]
        assert a == ["sent"] * 5 + ["rate_limited:api_key"] * 2
        b = [await outcome(otp, spread(rng), lone_ip(50 + i), owner="og_b") for i in range(5)]
        assert b == ["sent"] * 5


async def test_an_account_has_its_own_limits_and_is_stored_hashed(
    verifier_factory: VerifierFactory,
) -> None:
    rng = random.Random(5)
    async with verifier_factory(limit_account="3/10m") as otp:
        kw = {"owner": "og_a", "account_id": "user-8412"}
        results = [await outcome(otp, spread(rng), lone_ip(i), **kw) for i in range(4)]
        assert results == ["sent"] * 3 + ["rate_limited:account"]
        other_key = {"owner": "og_b", "account_id": "user-8412"}  # another app's user
        assert await outcome(otp, spread(rng), lone_ip(9), **other_key) == "sent"
        assert "user-8412" not in await dump_store(otp.store)


@pytest.mark.parametrize(
    "kw",
    [
        {"code_length": 5},
        {"code_length": True},
        {"service_name": "x" * 41},
        {"account_id": ""},
        {"account_id": "a" * 129},
        {"challenge_token": ""},
        {"locale": "not a tag!"},
        {"locale": "fr-ФР"},  # Cyrillic letters: alphanumeric, not ASCII
    ],
)
async def test_invalid_input_counts_nothing(
    verifier: Verifier, outbox: MemoryTransport, kw: dict[str, Any]
) -> None:
    for _ in range(3):
        with pytest.raises(InvalidRequest):
            await verifier.start(in_block(0), client_ip=lone_ip(0), **kw)
    for _ in range(3):  # the number's own limit (3/10m) is untouched
        await verifier.start(in_block(0), client_ip=lone_ip(0))
    assert len(outbox.outbox) == 3


# -- trusted returning numbers ------------


async def test_returning_numbers_pass_a_pumped_block_and_country(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    customer = in_block(9000)
    await login(verifier, outbox, customer, lone_ip(900))
    rng = random.Random(11)
    for i in range(80):  # the country's and the block's room spent by a pump
        await outcome(verifier, in_block(i), lone_ip(i))
        await outcome(verifier, spread(rng), lone_ip(100 + i))
    assert await outcome(verifier, spread(rng), lone_ip(300)) == "rate_limited:country"
    assert await outcome(verifier, customer, lone_ip(901)) == "sent"  # trusted


async def test_trust_does_not_lift_the_numbers_own_limit(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    customer = in_block(9000)
    await login(verifier, outbox, customer, lone_ip(900))
    assert [await outcome(verifier, customer, lone_ip(901 + i)) for i in range(3)] == [
        "sent",
        "sent",
        "rate_limited:phone",
    ]


async def test_trust_expires(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(
        trusted_days=1, admission_block_4="1/1h", admission_share=0.0
    ) as otp:
        customer = in_block(9000)
        await login(otp, outbox, customer, lone_ip(900))
        await otp.start(in_block(1), client_ip=lone_ip(1))  # the block's one slot
        assert await outcome(otp, customer, lone_ip(901)) == "sent"  # trusted
        clock.advance(86400 + 1)
        await otp.start(in_block(2), client_ip=lone_ip(2))  # the slot, taken again
        assert await outcome(otp, customer, lone_ip(902)) == "rate_limited:block"


async def test_trust_is_kept_as_a_keyed_hash(verifier: Verifier, outbox: MemoryTransport) -> None:
    customer = in_block(9000)
    await login(verifier, outbox, customer, lone_ip(900))
    flags = [line for line in (await dump_store(verifier.store)).splitlines() if "trusted:" in line]
    assert len(flags) == 1 and customer not in flags[0] and customer[1:] not in flags[0]


async def test_no_default_switches_off_a_country(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    """A spread pump spends the country's room; its returning customers still log in
    and nothing is suspended."""
    customers = [f"+4475{i:04d}1234" for i in range(5)]
    for i, c in enumerate(customers):
        await login(verifier, outbox, c, lone_ip(500 + i))
    rng = random.Random(2)
    for i in range(200):
        await outcome(verifier, spread(rng), lone_ip(i))
    for i, c in enumerate(customers):
        assert await outcome(verifier, c, lone_ip(600 + i)) == "sent"
    suspended = await verifier.store.list_events(
        EventQuery(types=(EventType.FRAUD_SUSPENDED.value,))
    )
    assert suspended == []


# -- the range walk, exactly, under concurrency ------------


async def test_a_range_walk_from_one_ip_is_exact_under_concurrency(
    verifier: Verifier, outbox: MemoryTransport
) -> None:
    """Ten concurrent starts from one IP to one block: exactly four are sent (the fifth
    distinct number is the walk), however the starts interleave."""
    results = await asyncio.gather(
        *(verifier.start(in_block(i), client_ip="203.0.113.66") for i in range(10)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, OtpguardError)]
    assert len(outbox.outbox) == 4 and len(refused) == 6
    assert all(getattr(r, "reason", "") == "fraud:sequential_numbers" for r in refused)


# -- busy legitimate traffic ------------


@pytest.mark.slow
async def test_busy_legitimate_traffic_on_a_fresh_install(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    """95 new users a minute for 30 minutes, 90 % typing their code 5-30 s later,
    each from their own IP, on the default settings: nobody is refused."""
    rng = random.Random(1)
    start_at = clock()
    queue: list[tuple[float, int, str, str]] = []
    for n in range(95 * 30):
        heapq.heappush(queue, (start_at + n * 60 / 95, n, "start", spread(rng)))
    refused: Counter[str] = Counter()
    pending: dict[int, str] = {}
    while queue:
        at, n, what, to = heapq.heappop(queue)
        clock.advance(max(0.0, at - clock()))
        if what == "start":
            result = await outcome(verifier, to, lone_ip(n))
            if result != "sent":
                refused[result] += 1
            elif rng.random() < 0.9:
                pending[n] = outbox.last_code(to)
                heapq.heappush(queue, (at + rng.uniform(5, 30), n, "check", to))
        else:
            code = pending.pop(n)
            assert (await verifier.check(code, to=to, client_ip=lone_ip(n))).valid
    assert refused == Counter()
