"""Fraud rules: refuse and allow sides, the figures behind each refusal, shadow mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import DestinationRefused, RateLimited
from otpguard.events import Event, EventType
from otpguard.phone import parse
from otpguard.service import Verifier
from otpguard.stats import load_activity
from otpguard.stores import EventQuery
from otpguard.transports.memory import MemoryTransport

PREFIX = "+44740012"
JERSEY = "+447797712345"
VerifierFactory = Callable[..., Any]

# Small figures so a test can reach them; the defaults are checked in test_defaults.
# The suspension is an opt-in (OTPGUARD_FRAUD_SUSPEND_ON_LOW_CONVERSION).
CONVERSION = {
    "fraud_conversion_min_sends": 5,
    "fraud_conversion_min_rate": 0.5,
    "fraud_suspend_on_low_conversion": True,
}


def in_prefix(i: int) -> str:
    """Distinct valid GB mobiles in the one prefix +44740012."""
    return f"{PREFIX}{i:04d}"


def elsewhere(i: int) -> str:
    """Distinct valid GB mobiles, each in its own prefix."""
    e164 = f"+4475{i:04d}1234"
    assert parse(e164).type == "mobile"
    return e164


def lone_ip(i: int) -> str:
    """A client IP in a network of its own: no IP or network rule links two sends."""
    return f"10.{i // 250}.{i % 250}.1"


async def events_of(otp: Verifier, type_: EventType) -> list[Event]:
    found = await otp.store.list_events(EventQuery(types=(type_.value,), limit=1000))
    return list(reversed(found))


async def refused_count(otp: Verifier, reason: str) -> int:
    """Refusals with ``reason``, stored or counted as repeats (refusals.py)."""
    events, _ = await load_activity(otp.store, 0, otp.clock() + 1)
    return sum(e.count for e in events if e.type == EventType.REFUSED.value and e.reason == reason)


async def refused_with(otp: Verifier, reason: str, *args: Any, **kw: Any) -> Event:
    """Start must be refused with ``reason`` before anything is sent; returns its event
    (the stored one, or for a repeat of its kind within the minute, the counted repeats)."""
    outbox: MemoryTransport = otp.transport  # type: ignore[assignment]
    sent_before = len(outbox.outbox)
    seen = {e.id for e in await events_of(otp, EventType.REFUSED)}
    counted = await refused_count(otp, reason)
    with pytest.raises(DestinationRefused) as err:
        await otp.start(*args, **kw)
    assert err.value.reason == reason and err.value.status == 403
    assert len(outbox.outbox) == sent_before
    assert await refused_count(otp, reason) == counted + 1
    new = [e for e in await events_of(otp, EventType.REFUSED) if e.id not in seen]
    if not new:
        events, _ = await load_activity(otp.store, 0, otp.clock() + 1)
        new = [e for e in events if not e.id and e.reason == reason][:1]  # counted repeats
    [event] = new
    assert event.reason == reason
    return event


async def approved_elsewhere(otp: Verifier, outbox: MemoryTransport, n: int) -> None:
    """``n`` real users in other prefixes who type their codes."""
    for i in range(n):
        v = await otp.start(elsewhere(i), client_ip=lone_ip(100 + i))
        assert (await otp.check(outbox.last_code(), verification_id=v.id)).valid


def test_defaults(settings: Settings) -> None:
    """Conservative: a range must see 30 sends in an hour with under 1 in 10 typed, and
    suspending a whole range or country is an opt-in; budgets are opt-in hard caps."""
    assert settings.fraud_suspend_on_low_conversion is False
    assert settings.fraud_observation_window == 60
    assert settings.fraud_conversion_window == 3600
    assert settings.fraud_conversion_min_sends == 30
    assert settings.fraud_conversion_min_rate == 0.1
    assert settings.fraud_conversion_suspend == 3600
    assert (settings.fraud_sequential_window, settings.fraud_sequential_threshold) == (600, 5)
    assert settings.fraud.budget_global == () and settings.fraud.budget_country == ()
    assert settings.fraud_shadow == [] and settings.fraud.shadow == frozenset()


# -- conversion watch ---------------------------------------------------------------------


async def test_low_conversion_suspends_a_prefix(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(**CONVERSION) as otp:
        await approved_elsewhere(otp, outbox, 10)  # the country as a whole converts
        for i in range(5):
            await otp.start(in_prefix(i), client_ip=lone_ip(i))  # nobody types these
        clock.advance(301)  # past the code lifetime: these can no longer convert
        await otp.start(in_prefix(5), client_ip=lone_ip(5))  # sent; the watch now decides
        [suspended] = await events_of(otp, EventType.FRAUD_SUSPENDED)
        assert (suspended.rule, suspended.reason) == ("low_conversion", "fraud:low_conversion")
        assert suspended.details == {
            "subject": f"prefix {PREFIX}",
            "sent": 5,
            "approved": 0,
            "rate": 0.0,
            "min_rate": 0.5,
            "min_sends": 5,
            "window_s": 3600,
            "until": clock() + 3600,
        }
        assert len(outbox.sent_to(in_prefix(5))) == 1

        event = await refused_with(otp, "fraud:low_conversion", in_prefix(6), client_ip=lone_ip(6))
        assert event.details["subject"] == f"prefix {PREFIX}"
        assert (event.details["sent"], event.details["approved"]) == (5, 0)
        assert event.details["until"] == clock() + 3600
        await refused_with(otp, "fraud:low_conversion", in_prefix(0), client_ip=lone_ip(7))
        await otp.start(elsewhere(50), client_ip=lone_ip(50))  # other ranges still served

        clock.advance(3600)
        await otp.start(in_prefix(6), client_ip=lone_ip(6))
        assert len(await events_of(otp, EventType.FRAUD_SUSPENDED)) == 1


async def test_a_converting_prefix_is_not_suspended(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(**CONVERSION) as otp:
        for i in range(5):
            v = await otp.start(in_prefix(i), client_ip=lone_ip(i))
            if i < 3:  # 3 of 5 typed: 0.6 >= 0.5
                assert (await otp.check(outbox.last_code(), verification_id=v.id)).valid
        clock.advance(301)
        for i in range(5, 8):
            await otp.start(in_prefix(i), client_ip=lone_ip(i))
        assert await events_of(otp, EventType.FRAUD_SUSPENDED) == []
        assert len(outbox.outbox) == 8


async def test_young_sends_are_not_judged(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    """A burst of real users is not suspended before they had time to type: a send is
    judged once it is older than the observation window (60 s), not the code lifetime."""
    async with verifier_factory(**CONVERSION) as otp:
        await approved_elsewhere(otp, outbox, 10)
        clock.advance(301)
        for i in range(8):
            await otp.start(in_prefix(i), client_ip=lone_ip(i))
            clock.advance(7)  # all eight within the 60 s observation window
        assert await events_of(otp, EventType.FRAUD_SUSPENDED) == []
        clock.advance(61 - 7)  # the codes are still valid, but nobody typed them in time
        await otp.start(in_prefix(8), client_ip=lone_ip(8))
        [suspended] = await events_of(otp, EventType.FRAUD_SUSPENDED)
        assert suspended.details["sent"] == 8


async def test_low_conversion_suspends_a_country(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(allowed_countries=["GB", "JE"], **CONVERSION) as otp:
        for i in range(5):
            await otp.start(elsewhere(i), client_ip=lone_ip(i))  # five ranges, none typed
        clock.advance(301)
        await otp.start(elsewhere(5), client_ip=lone_ip(5))
        [suspended] = await events_of(otp, EventType.FRAUD_SUSPENDED)
        assert suspended.details["subject"] == "country GB" and suspended.country == "GB"
        event = await refused_with(otp, "fraud:low_conversion", elsewhere(6), client_ip=lone_ip(6))
        assert event.details["subject"] == "country GB"
        await otp.start(JERSEY, client_ip=lone_ip(7))  # Jersey is judged on its own


async def test_low_conversion_in_shadow_mode_records_and_sends(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(fraud_shadow=["low_conversion"], **CONVERSION) as otp:
        await approved_elsewhere(otp, outbox, 10)
        for i in range(5):
            await otp.start(in_prefix(i), client_ip=lone_ip(i))
        clock.advance(301)
        for i in range(5, 8):
            await otp.start(in_prefix(i), client_ip=lone_ip(i))
        assert len(outbox.outbox) == 10 + 8
        shadow = await events_of(otp, EventType.FRAUD_SHADOW)
        assert len(shadow) == 3 and {e.rule for e in shadow} == {"low_conversion"}
        assert {e.reason for e in shadow} == {"fraud:low_conversion"}
        assert shadow[0].details["subject"] == f"prefix {PREFIX}"
        assert shadow[0].details["sent"] == 5 and shadow[0].details["approved"] == 0
        assert await events_of(otp, EventType.FRAUD_SUSPENDED) == []
        assert await events_of(otp, EventType.REFUSED) == []


# -- sequential numbers ---------------------------------------------------------------------


async def test_range_walk_from_one_ip(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    ip = "203.0.113.7"
    for i in range(4):
        await verifier.start(in_prefix(i), client_ip=ip)
    event = await refused_with(verifier, "fraud:sequential_numbers", in_prefix(4), client_ip=ip)
    assert event.client_ip == ip
    assert event.details == {
        "subject": f"ip {ip} -> prefix {PREFIX}",
        "distinct_numbers": 5,
        "threshold": 5,
        "window_s": 600,
    }
    await verifier.start(in_prefix(0), client_ip=ip)  # a number already seen is no walk
    await verifier.start(elsewhere(0), client_ip=ip)  # another range
    await verifier.start(in_prefix(4), client_ip="198.51.100.7")  # another client
    clock.advance(600)
    await verifier.start(in_prefix(5), client_ip=ip)
    assert len(outbox.outbox) == 4 + 3 + 1


async def test_range_walk_across_one_network(verifier: Verifier) -> None:
    for i in range(4):
        await verifier.start(in_prefix(i), client_ip=f"198.51.100.{i + 1}")
    event = await refused_with(
        verifier, "fraud:sequential_numbers", in_prefix(4), client_ip="198.51.100.99"
    )
    assert event.details["subject"] == f"network 198.51.100.0/24 -> prefix {PREFIX}"
    await verifier.start(in_prefix(4), client_ip="198.51.101.99")


async def test_range_walk_over_ipv6_addresses_of_one_host(verifier: Verifier) -> None:
    for i in range(4):
        await verifier.start(in_prefix(i), client_ip=f"2001:db8:0:1::{i + 1}")
    event = await refused_with(
        verifier, "fraud:sequential_numbers", in_prefix(4), client_ip="2001:db8:0:1::ff"
    )
    assert event.details["subject"] == f"ip 2001:db8:0:1::/64 -> prefix {PREFIX}"


async def test_sequential_in_shadow_mode_records_and_sends(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(fraud_shadow=["sequential_numbers"]) as otp:
        for i in range(6):
            await otp.start(in_prefix(i), client_ip="203.0.113.7")
        assert len(outbox.outbox) == 6
        shadow = await events_of(otp, EventType.FRAUD_SHADOW)
        # The 5th and 6th distinct numbers would have been refused, on both scopes.
        assert sorted(e.details["distinct_numbers"] for e in shadow) == [5, 6]
        assert {(e.rule, e.reason, e.client_ip) for e in shadow} == {
            ("sequential_numbers", "fraud:sequential_numbers", "203.0.113.7")
        }
        assert await events_of(otp, EventType.REFUSED) == []


# -- budgets ------------------------------------------------------------------------------------


async def test_global_budget_is_a_circuit_breaker(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory(fraud_budget_global="3/1h;5/24h") as otp:
        for i in range(3):
            await otp.start(elsewhere(i), client_ip=lone_ip(i))
        event = await refused_with(
            otp, "fraud:budget_exhausted", elsewhere(3), client_ip=lone_ip(3)
        )
        assert event.details == {"subject": "global", "sent": 3, "retry_after": 3600}
        clock.advance(3600)
        for i in range(3, 5):
            await otp.start(elsewhere(i), client_ip=lone_ip(i))
        event = await refused_with(
            otp, "fraud:budget_exhausted", elsewhere(5), client_ip=lone_ip(5)
        )
        assert event.details["subject"] == "global"
        assert event.details["sent"] == 5  # the day's budget
        assert len(outbox.outbox) == 5


async def test_country_budget(verifier_factory: VerifierFactory, clock: ManualClock) -> None:
    async with verifier_factory(fraud_budget_country="2/1h", allowed_countries=["GB", "JE"]) as otp:
        await otp.start(elsewhere(0), client_ip=lone_ip(0))
        await otp.start(elsewhere(1), client_ip=lone_ip(1))
        event = await refused_with(
            otp, "fraud:budget_exhausted", elsewhere(2), client_ip=lone_ip(2)
        )
        assert event.details == {"subject": "country GB", "sent": 2, "retry_after": 3600}
        await otp.start(JERSEY, client_ip=lone_ip(3))
        clock.advance(3600)
        await otp.start(elsewhere(2), client_ip=lone_ip(2))


async def test_refused_sends_do_not_spend_the_budget(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(fraud_budget_global="5/1h") as otp:
        for _ in range(3):
            await otp.start(elsewhere(0), client_ip=lone_ip(0))
        for _ in range(10):  # a flood refused by the phone limit costs nothing
            with pytest.raises(RateLimited) as err:
                await otp.start(elsewhere(0), client_ip=lone_ip(0))
            assert err.value.rule == "phone"
        await otp.start(elsewhere(1), client_ip=lone_ip(1))
        await otp.start(elsewhere(2), client_ip=lone_ip(2))
        await refused_with(otp, "fraud:budget_exhausted", elsewhere(3), client_ip=lone_ip(3))
        assert len(outbox.outbox) == 5


async def test_budget_in_shadow_mode_records_and_sends(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(
        fraud_budget_global="2/1h", fraud_shadow=["budget_exhausted"]
    ) as otp:
        for i in range(4):
            await otp.start(elsewhere(i), client_ip=lone_ip(i))
        assert len(outbox.outbox) == 4
        shadow = await events_of(otp, EventType.FRAUD_SHADOW)
        assert sorted((e.rule, e.details["subject"], e.details["sent"]) for e in shadow) == [
            ("budget_exhausted", "global", 2),
            ("budget_exhausted", "global", 3),
        ]


# -- allowlist and blocklist ---------------------------------------------------------------------


async def test_allowlist_skips_fraud_rules_but_not_limits_or_policy(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(
        allowlist=[PREFIX, "+449012345678"], fraud_budget_global="2/1h"
    ) as otp:
        for i in range(6):  # a range walk and over budget, but allowlisted
            await otp.start(in_prefix(i), client_ip="203.0.113.7")
        assert len(outbox.outbox) == 6
        assert await events_of(otp, EventType.FRAUD_SHADOW) == []
        # Allowlisted sends did not spend the budget of everyone else.
        await otp.start(elsewhere(0), client_ip=lone_ip(0))
        await otp.start(elsewhere(1), client_ip=lone_ip(1))
        await refused_with(otp, "fraud:budget_exhausted", elsewhere(2), client_ip=lone_ip(2))
        # Rate limits still hold ...
        await otp.start(in_prefix(0), client_ip=lone_ip(3))
        await otp.start(in_prefix(0), client_ip=lone_ip(4))
        with pytest.raises(RateLimited) as err:
            await otp.start(in_prefix(0), client_ip=lone_ip(5))
        assert err.value.rule == "phone"
        # ... and so does the type policy.
        await refused_with(otp, "premium_rate", "+449012345678", client_ip=lone_ip(6))


async def test_blocklist_refuses_before_fraud_rules_run(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(blocklist=[PREFIX]) as otp:
        for i in range(6):
            await refused_with(otp, "blocklisted", in_prefix(i), client_ip="203.0.113.7")
        assert outbox.outbox == []
        assert await events_of(otp, EventType.FRAUD_SHADOW) == []


async def test_budget_holds_exactly_under_concurrency(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, tmp_path: Any
) -> None:
    """The budget is counted in the same atomic step as the rate limits."""
    import asyncio

    async with verifier_factory(
        fraud_budget_global="5/1h", store=f"sqlite:///{tmp_path / 'budget.db'}"
    ) as otp:
        results = await asyncio.gather(
            *(otp.start(elsewhere(i), client_ip=lone_ip(i)) for i in range(20)),
            return_exceptions=True,
        )
    refused = [r for r in results if isinstance(r, DestinationRefused)]
    assert len(outbox.outbox) == 5
    assert len(refused) == 15 and {r.reason for r in refused} == {"fraud:budget_exhausted"}
