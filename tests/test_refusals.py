"""Repeated refusals are counted per minute and kind, not stored or logged one by one
(``refusals.py``), and every figure that counts refusals still counts each of them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from otpguard.alerts import AlertEvaluator
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import OtpguardError
from otpguard.events import EventType
from otpguard.metrics import Metrics
from otpguard.service import Verifier
from otpguard.sinks import Dispatcher
from otpguard.stats import stats_for
from otpguard.stores import EventQuery, store_from_url
from otpguard.transports.memory import MemoryTransport

NUMBER = "+447400123456"
IP = "203.0.113.9"
PREMIUM = "+449012345678"
REFUSED = EventType.REFUSED.value


@pytest.fixture
def rig(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> Callable[..., contextlib.AbstractAsyncContextManager[tuple[Verifier, Metrics]]]:
    @contextlib.asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[tuple[Verifier, Metrics]]:
        settings = settings_factory(**overrides)
        metrics = Metrics()
        v = Verifier(
            settings,
            store_from_url(settings.store_url),
            outbox,
            clock=clock,
            listeners=[metrics.observe],
        )
        async with v:
            yield v, metrics

    return factory


async def flood(v: Verifier, clock: ManualClock, n: int, to: str = NUMBER, ip: str = IP) -> int:
    """``n`` starts, a quarter of a second apart; returns how many were refused."""
    refused = 0
    for _ in range(n):
        try:
            await v.start(to, client_ip=ip)
        except OtpguardError:
            refused += 1
        clock.advance(0.25)
    return refused


def refused_metric(metrics: Metrics) -> float:
    return sum(
        s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == "otpguard_refusals_total"
    )


async def test_a_flood_stores_one_event_per_minute_and_every_figure_counts_it_all(
    rig: Callable[..., Any], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    clock.now = 1_800_000_000.0  # a whole minute: 500 starts at 4/s span minutes 0, 1, 2
    async with rig(limit_phone="3/10m", limit_ip="off", alert_ip_threshold=20) as (v, metrics):
        refused = await flood(v, clock, 500)
        assert refused == 497

        stored = await v.store.list_events(EventQuery(types=(REFUSED,), limit=1000))
        assert len(stored) == 3  # the first refusal of each minute, with its details
        assert {(e.reason, e.rule) for e in stored} == {("rate_limited", "phone")}
        assert all("retry_after" in e.details for e in stored)
        lines = [r.getMessage() for r in caplog.records if r.name == "otpguard.events"]
        refusal_lines = [line for line in lines if '"request.refused' in line]
        # Per minute: the first refusal, then a summary at 10 and at 100 refusals (the
        # third minute has 17: 240 + 240 + 20 starts less the 3 sent).
        assert len(refusal_lines) == 3 + 3 + 2
        assert sum('"count":100,' in line for line in refusal_lines) == 2
        assert refused_metric(metrics) == 497  # the metrics see every refusal

        stats = (await stats_for(v.store, v.settings.alerts, clock(), 3600)).as_dict()
        assert stats["totals"]["refused"] == 497
        assert stats["totals"]["requests"] == 500
        assert stats["refusals_by_reason"] == [{"reason": "rate_limited:phone", "count": 497}]
        assert [r["count"] for r in stats["top_numbers"]] == [500]
        assert stats["top_ips"] == [{"ip": IP, "count": 500}]
        assert sum(b["refused"] for b in stats["series"]) == 497

        opened = {a.rule: a for a in (await AlertEvaluator(v, Dispatcher([])).evaluate()).opened}
        assert opened["hot_number"].details["requests"] == 500
        assert opened["hot_ip"].details["requests"] == 500
        assert opened["request_spike"].details["recent"] == 500


async def test_concurrent_refusals_store_one_example(
    rig: Callable[..., Any], clock: ManualClock
) -> None:
    import asyncio

    clock.now = 1_800_000_000.0
    async with rig(limit_phone="1/10m", limit_ip="off") as (v, _):
        await v.start(NUMBER, client_ip=IP)
        results = await asyncio.gather(
            *(v.start(NUMBER, client_ip=IP) for _ in range(40)), return_exceptions=True
        )
        assert all(isinstance(r, OtpguardError) for r in results)
        stored = await v.store.list_events(EventQuery(types=(REFUSED,)))
        assert len(stored) == 1
        stats = await stats_for(v.store, v.settings.alerts, clock(), 3600)
        assert stats.totals["refused"] == 40


async def test_admission_and_destination_alerts_count_counted_refusals(
    rig: Callable[..., Any], clock: ManualClock
) -> None:
    clock.now = 1_800_000_000.0
    settings: dict[str, Any] = {
        "limit_phone": "off",
        "limit_ip": "off",
        "limit_network": "off",
        "fraud_sequential_threshold": 1000,
        "admission_block_4": "3/12h",
        "alert_admission_threshold": 5,
    }
    async with rig(**settings) as (v, _):
        # One script, one IP, a pumped block: 3 sent, then refused by admission.
        for i in range(60):
            with contextlib.suppress(OtpguardError):
                await v.start(f"+44740091{i % 10:04d}", client_ip=IP)
        for _ in range(30):
            with contextlib.suppress(OtpguardError):
                await v.start(PREMIUM, client_ip=IP)
        stored = await v.store.list_events(EventQuery(types=(REFUSED,)))
        assert len(stored) == 2  # one example of each kind
        opened = {a.id: a for a in (await AlertEvaluator(v, Dispatcher([])).evaluate()).opened}
        pressure = opened["admission_pressure:block +44740091"].details
        assert (pressure["refused"], pressure["unconverted"]) == (57, 3)
        assert opened["refused_destination:premium_rate"].details["refused"] == 30


async def test_tallies_leave_with_the_events_they_stand_for(
    rig: Callable[..., Any], clock: ManualClock
) -> None:
    clock.now = 1_800_000_000.0
    async with rig(limit_phone="1/10m", limit_ip="off", event_retention_days=1) as (v, _):
        await flood(v, clock, 20)
        assert (await stats_for(v.store, v.settings.alerts, clock(), 3600)).totals["refused"] == 19
        clock.advance(86_400 + 120)
        await v.purge()
        assert await v.store.list_refusal_tallies(0, clock()) == []
        assert await v.store.list_events(EventQuery(types=(REFUSED,))) == []


async def test_different_numbers_are_different_kinds(
    rig: Callable[..., Any], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Per-number refusals keep their numbers apart: each has its own example."""
    caplog.set_level(logging.INFO)
    clock.now = 1_800_000_000.0
    async with rig(limit_phone="1/10m", limit_ip="off") as (v, _):
        for n in range(3):
            await flood(v, clock, 5, to=f"+44740012{n:04d}")
        stored = await v.store.list_events(EventQuery(types=(REFUSED,)))
        assert len({e.number_hash for e in stored}) == len(stored) == 3
        stats = await stats_for(v.store, v.settings.alerts, clock(), 3600)
        assert sorted(r.count for r in stats.top_numbers) == [5, 5, 5]
