"""Delivery reports (Twilio status callbacks) count once, for a message otpguard sent,
within a bounded time: a replayed "undelivered / 21211" cannot keep a number blocked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest

from otpguard.clock import ManualClock
from otpguard.errors import DestinationRefused
from otpguard.service import DELIVERY_REPORT_WINDOW, DeliveryReport, Verifier
from otpguard.stores import EventQuery
from otpguard.transports.memory import MemoryTransport

from .conftest import UK_MOBILE

FIRST = "MM00000001"  # the memory transport's id for its first message
REPORTS = EventQuery(types=("verification.delivery_status",))


async def test_a_replayed_report_does_not_extend_the_block(
    verifier: Verifier, outbox: MemoryTransport, clock: ManualClock
) -> None:
    v = await verifier.start(UK_MOBILE)
    report = (v.id, "undelivered", 21211, FIRST)
    assert await verifier.record_delivery_status(*report) is DeliveryReport.RECORDED
    clock.advance(3600)
    assert await verifier.record_delivery_status(*report) is DeliveryReport.DUPLICATE
    assert len(await verifier.store.list_events(REPORTS)) == 1
    with pytest.raises(DestinationRefused):
        await verifier.start(UK_MOBILE)
    # Blocked for undeliverable_ttl from the first report, not from the replay.
    clock.advance(verifier.settings.undeliverable_ttl - 3600 + 1)
    await verifier.start(UK_MOBILE)
    assert len(outbox.outbox) == 2


async def test_each_status_of_a_message_counts_once(verifier: Verifier, clock: ManualClock) -> None:
    v = await verifier.start(UK_MOBILE)
    for status in ("sent", "delivered"):
        assert await verifier.record_delivery_status(v.id, status, None, FIRST) is (
            DeliveryReport.RECORDED
        )
        assert await verifier.record_delivery_status(v.id, status, None, FIRST) is (
            DeliveryReport.DUPLICATE
        )
    events = await verifier.store.list_events(REPORTS)
    assert sorted(e.reason or "" for e in events) == ["delivered", "sent"]


@pytest.mark.parametrize("sid", ["SM" + "0" * 32, "", "MM00000002"])
async def test_reports_on_messages_otpguard_did_not_send_are_ignored(
    verifier: Verifier, sid: str
) -> None:
    v = await verifier.start(UK_MOBILE)
    outcome = await verifier.record_delivery_status(v.id, "undelivered", 21211, sid)
    assert outcome is DeliveryReport.UNKNOWN_MESSAGE
    assert await verifier.store.list_events(REPORTS) == []
    await verifier.start(UK_MOBILE)  # not blocked


async def test_a_message_of_another_verification_does_not_count(verifier: Verifier) -> None:
    await verifier.start(UK_MOBILE)
    other = await verifier.start("+447400654321")
    outcome = await verifier.record_delivery_status(other.id, "undelivered", 21211, FIRST)
    assert outcome is DeliveryReport.UNKNOWN_MESSAGE
    await verifier.start(UK_MOBILE)


async def test_late_reports_are_ignored(verifier: Verifier, clock: ManualClock) -> None:
    v = await verifier.start(UK_MOBILE)
    clock.advance(DELIVERY_REPORT_WINDOW + 1)
    outcome = await verifier.record_delivery_status(v.id, "undelivered", 21211, FIRST)
    assert outcome is DeliveryReport.TOO_LATE
    await verifier.start(UK_MOBILE)


SHORT_WINDOWS = {
    "limit_phone": "3/10m",
    "limit_ip": "10/10m",
    "limit_prefix": "20/10m",
    "limit_country": "300/10m",
    "limit_global": "100/1m",
    "limit_failed_checks": "10/10m",
    "limit_ip_failed_checks": "30/10m",
    "fraud_conversion_window": 600,
    "fraud_budget_global": "1000/10m",
    "fraud_budget_country": "500/10m",
}


async def test_once_only_outlives_a_purge(
    verifier_factory: Callable[..., contextlib.AbstractAsyncContextManager[Verifier]],
    clock: ManualClock,
) -> None:
    """Rate entries are purged after the longest limit window (here 10 minutes), but a
    verification lives longer (expiry plus an hour): the once-only entry must stay."""
    async with verifier_factory(**SHORT_WINDOWS) as otp:
        v = await otp.start(UK_MOBILE)
        report = (v.id, "failed", 30003, FIRST)
        assert await otp.record_delivery_status(*report) is DeliveryReport.RECORDED
        clock.advance(1800)
        await otp.purge()
        assert await otp.record_delivery_status(*report) is DeliveryReport.DUPLICATE
