"""The run-time block and allow lists on the send path and through ``Verifier.lists``.

The storage side is ``tests/contracts/test_lists_contract.py``; the CLI, the admin API
and the dashboard have their own modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from otpguard.clock import ManualClock
from otpguard.errors import Conflict, DestinationRefused, InvalidRequest, NotFound, RateLimited
from otpguard.events import EventType
from otpguard.numberlists import NumberListFull, mask_pattern, parse_duration
from otpguard.service import Verifier
from otpguard.stores import EventQuery
from otpguard.transports.memory import MemoryTransport

from .dump import dump_store

VerifierFactory = Callable[..., Any]
PREFIX = "+44740012"
NUMBER = "+447400123456"


def in_prefix(i: int) -> str:
    return f"{PREFIX}{i:04d}"


def lone_ip(i: int) -> str:
    return f"10.{i // 250}.{i % 250}.1"


async def refused(otp: Verifier, to: str, outbox: MemoryTransport, **kw: Any) -> str:
    sent = len(outbox.outbox)
    with pytest.raises(DestinationRefused) as err:
        await otp.start(to, **kw)
    assert len(outbox.outbox) == sent
    return err.value.reason


async def list_events(otp: Verifier) -> list[tuple[str, str | None, dict[str, Any]]]:
    types = tuple(t.value for t in (EventType.NUMBER_BLOCKED, EventType.NUMBER_ALLOWED,
                                    EventType.NUMBER_UNBLOCKED))  # fmt: skip
    events = await otp.store.list_events(EventQuery(types=types))
    # Events of one instant have no order among them: sorted by type.
    return sorted(((e.type, e.number_masked, e.details) for e in events), key=lambda t: t[0])


async def test_a_block_entry_refuses_at_once_and_unblock_lifts_it(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory() as otp:
        await otp.start(in_prefix(0), client_ip=lone_ip(0))
        await otp.lists.add("07400 12", "block", by="test", note="abuse ticket 12")
        assert await refused(otp, in_prefix(1), outbox, client_ip=lone_ip(1)) == "blocklisted"
        await otp.start("+447400130000", client_ip=lone_ip(2))  # outside the prefix
        change = await otp.lists.remove(PREFIX, by="ops")
        assert change.entry.kind == "block" and change.entry.note == "abuse ticket 12"
        await otp.start(in_prefix(1), client_ip=lone_ip(3))
        refusals = await otp.store.list_events(EventQuery(types=(EventType.REFUSED.value,)))
        assert [(e.reason, e.details.get("list")) for e in refusals] == [("blocklisted", "runtime")]
        assert await list_events(otp) == [
            ("number.blocked", mask_pattern(PREFIX),
             {"kind": "block", "by": "test", "expires_at": None, "note": "abuse ticket 12"}),
            ("number.unblocked", mask_pattern(PREFIX),
             {"kind": "block", "by": "ops", "expires_at": None, "note": "abuse ticket 12"}),
        ]  # fmt: skip


async def test_an_entry_expires_by_the_clock(
    verifier_factory: VerifierFactory, outbox: MemoryTransport, clock: ManualClock
) -> None:
    async with verifier_factory() as otp:
        change = await otp.lists.add(NUMBER, "block", by="test", duration="1h")
        assert change.entry.expires_at == clock() + 3600
        clock.advance(3599)
        assert await refused(otp, NUMBER, outbox) == "blocklisted"
        clock.advance(1)
        await otp.start(NUMBER)
        assert await otp.lists.entries() == []
        assert f"numlist:{NUMBER}" in await dump_store(otp.store)
        await otp.purge()
        assert f"numlist:{NUMBER}" not in await dump_store(otp.store)


async def test_an_allow_entry_skips_fraud_rules_and_admission_not_limits(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(fraud_budget_global="2/1h", admission_block_4="2/12h") as otp:
        await otp.lists.add(PREFIX, "allow", by="test", note="load test range")
        for i in range(6):  # a range walk, over budget and over the block's admission
            await otp.start(in_prefix(i), client_ip="203.0.113.7")
        assert len(outbox.outbox) == 6
        # The allowlisted sends spent neither the budget nor the admission room.
        await otp.start("+447500001234", client_ip=lone_ip(0))
        await otp.start("+447500011234", client_ip=lone_ip(1))
        assert await refused(otp, "+447500021234", outbox, client_ip=lone_ip(2)) == (
            "fraud:budget_exhausted"
        )
        await otp.start(in_prefix(0), client_ip=lone_ip(3))
        await otp.start(in_prefix(0), client_ip=lone_ip(4))
        with pytest.raises(RateLimited) as err:  # the per-number limit still holds
            await otp.start(in_prefix(0), client_ip=lone_ip(5))
        assert err.value.rule == "phone"


async def test_block_wins_over_allow(
    verifier_factory: VerifierFactory, outbox: MemoryTransport
) -> None:
    async with verifier_factory(allowlist=[NUMBER]) as otp:
        await otp.lists.add(NUMBER[:-2], "block", by="test")
        assert await refused(otp, NUMBER, outbox) == "blocklisted"
        await otp.lists.add(NUMBER[:-2], "allow", by="test")  # replaces the block entry
        await otp.start(NUMBER)
        (entry,) = [x for x in await otp.lists.entries() if x.source == "runtime"]
        assert entry.kind == "allow"
        allowed = [d for t, _, d in await list_events(otp) if t == "number.allowed"]
        assert [d.get("replaced") for d in allowed] == ["block"]


async def test_listing_merges_the_configuration(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory(blocklist=["07557"], allowlist=["+447400999999"]) as otp:
        await otp.lists.add(NUMBER, "block", by="test", until="2099-01-01T00:00:00Z")
        listed = [(x.pattern, x.kind, x.source, x.expires_at) for x in await otp.lists.entries()]
        assert listed == [
            (NUMBER, "block", "runtime", 4070908800.0),
            ("+447557", "block", "config", None),
            ("+447400999999", "allow", "config", None),
        ]
        assert await otp.lists.counts() == {
            "runtime": {"block": 1, "allow": 0},
            "config": {"block": 1, "allow": 1},
        }
        with pytest.raises(Conflict, match="OTPGUARD_BLOCKLIST") as err:
            await otp.lists.remove("+447557", by="test")
        assert err.value.reason == "configured"
        with pytest.raises(NotFound):
            await otp.lists.remove("+447558", by="test")


async def test_the_cap_is_a_clear_error(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory(number_list_max=2) as otp:
        await otp.lists.add("+4474", "block", by="test")
        await otp.lists.add("+4475", "block", by="test")
        with pytest.raises(NumberListFull, match="OTPGUARD_NUMBER_LIST_MAX") as err:
            await otp.lists.add("+4476", "block", by="test")
        assert err.value.status == 409


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"raw": "hello"}, "not a number or prefix"),
        ({"note": "x" * 201}, "at most 200"),
        ({"note": "two\nlines"}, "one line"),
        ({"duration": "7 days"}, "not a duration"),
        ({"duration": "0d"}, "not a duration"),
        ({"until": "tomorrow"}, "not a time"),
        ({"until": "2020-01-01T00:00:00Z"}, "in the future"),
        ({"duration": "1d", "until": "2099-01-01"}, "not both"),
    ],
)
async def test_bad_input_is_named(
    verifier_factory: VerifierFactory, kwargs: dict[str, Any], message: str
) -> None:
    async with verifier_factory() as otp:
        raw = kwargs.pop("raw", NUMBER)
        with pytest.raises(InvalidRequest, match=message):
            await otp.lists.add(raw, "block", by="test", **kwargs)
        assert await otp.lists.entries() == []


async def test_events_mask_numbers_and_digit_runs_in_notes(
    verifier_factory: VerifierFactory,
) -> None:
    async with verifier_factory() as otp:
        await otp.lists.add(NUMBER, "allow", by="test", note="tester 07400123456 (QA)")
        (event,) = await otp.store.list_events(EventQuery(types=("number.allowed",)))
        assert event.number_masked == "+44******3456"
        assert event.number_hash == otp.keyring.keyed_hash("number", NUMBER)
        assert event.details["note"] == "tester 07********* (QA)"
        assert NUMBER[1:] not in event.to_json() and "123456" not in event.to_json()


def test_durations() -> None:
    assert [parse_duration(d) for d in ("90s", "15m", "12h", "7d", "2w")] == [
        90.0, 900.0, 43200.0, 604800.0, 1209600.0,
    ]  # fmt: skip


async def test_explain_applies_the_run_time_entries(verifier_factory: VerifierFactory) -> None:
    async with verifier_factory() as otp:
        assert (await otp.explain_number(NUMBER))["allowlisted"] is False
        await otp.lists.add(NUMBER[:-3], "allow", by="test")
        info = await otp.explain_number(NUMBER)
        assert info["allowlisted"] is True
        assert info["channels"]["sms"]["allowed"] is True  # type: ignore[index]  # explain() -> dict[str, object]
        await otp.lists.add(NUMBER, "block", by="test")
        channels = (await otp.explain_number(NUMBER))["channels"]
        assert channels == {ch: {"allowed": False, "reason": "blocklisted"}
                            for ch in ("sms", "whatsapp", "voice")}  # fmt: skip
