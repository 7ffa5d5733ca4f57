"""The stats, the dashboard's figures and the alerts read the event counts, never the
events: what a read costs does not grow with the traffic behind it, and the figures
are the ones the stored events (and the tallied refusals) add up to."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from otpguard.alerts import AlertEvaluator
from otpguard.clock import ManualClock
from otpguard.config import Settings
from otpguard.errors import OtpguardError
from otpguard.events import EventType
from otpguard.service import Verifier
from otpguard.sinks import Dispatcher
from otpguard.stats import is_request, load_activity, refusal_label, stats_for
from otpguard.stores.sqlite import SQLiteStore
from otpguard.transports.memory import MemoryTransport

HOT = "+447400123456"
IP = "203.0.113.9"


@pytest.fixture
async def verifier(
    settings_factory: Callable[..., Settings], clock: ManualClock, outbox: MemoryTransport
) -> AsyncIterator[Verifier]:
    settings = settings_factory()
    async with Verifier(settings, SQLiteStore("sqlite://:memory:"), outbox, clock=clock) as v:
        yield v


@contextlib.contextmanager
def statements(store: SQLiteStore) -> Iterator[list[str]]:
    """Every SQL statement the store's connection runs meanwhile (sqlite3's trace)."""
    conn = store._conn
    assert conn is not None
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        conn.set_trace_callback(None)


async def traffic(v: Verifier, clock: ManualClock, outbox: MemoryTransport, users: int) -> None:
    """``users`` people signing in (every third types a wrong code first), and a script
    asking for codes to one number from one IP ten times per user."""
    for i in range(users):
        to = f"+44740055{i:04d}"
        started = await v.start(to, client_ip=f"10.{i // 250}.{i % 250}.7")  # one per /24
        if i % 3 == 0:
            await v.check("000000" if outbox.last_code(to) != "000000" else "111111",
                          verification_id=started.id)  # fmt: skip
        await v.check(outbox.last_code(to), verification_id=started.id)
        for _ in range(10):
            with contextlib.suppress(OtpguardError):
                await v.start(HOT, client_ip=IP)
        clock.advance(1)


async def figures_from_events(v: Verifier, since: float, until: float) -> dict[str, Any]:
    """The same figures added up from every stored event and tallied refusal."""
    events, truncated = await load_activity(v.store, since, until)
    assert not truncated
    totals: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    numbers: Counter[str] = Counter()
    names = {
        EventType.STARTED: "started",
        EventType.CHECK_PASSED: "approved",
        EventType.CHECK_FAILED: "checks_failed",
        EventType.REFUSED: "refused",
    }
    for e in events:
        totals["requests"] += e.count if is_request(e) else 0
        if e.type in names:
            totals[names[EventType(e.type)]] += e.count
        if e.type == EventType.REFUSED:
            refusals[refusal_label(e)] += e.count
        if is_request(e) and e.number_masked:
            numbers[e.number_masked] += e.count
    return {"totals": totals, "refusals": refusals, "top": numbers.most_common(1)[0]}


async def test_stats_and_alerts_read_counts_not_events(
    verifier: Verifier, clock: ManualClock, outbox: MemoryTransport
) -> None:
    store = verifier.store
    assert isinstance(store, SQLiteStore)
    t0 = clock()
    await traffic(verifier, clock, outbox, 40)
    expected = await figures_from_events(verifier, t0, clock() + 1)
    assert expected["totals"]["refused"] > 300  # the script's starts, mostly tallied

    with statements(store) as seen:
        stats = await stats_for(store, verifier.settings.alerts, clock(), 3600)
        evaluation = await AlertEvaluator(verifier, Dispatcher([])).evaluate(clock())
    reads = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert any("FROM event_counts" in s for s in reads)
    # Not one row of the events or the tallies is read (the alerts they open are written).
    assert [s for s in reads if "FROM events" in s or "refusal_tallies" in s] == []

    got = stats.totals
    for name in ("requests", "started", "approved", "checks_failed", "refused"):
        assert got[name] == expected["totals"][name], name
    assert {r.label: r.count for r in stats.refusals} == dict(expected["refusals"])
    top = stats.top_numbers[0]
    assert (top.label, top.count) == expected["top"] == ("+44******3456", 400)
    opened = {a.id for a in evaluation.opened}
    assert f"hot_ip:{IP}" in opened
    [hot] = [a for a in opened if a.startswith("hot_number:")]
    assert hot.startswith(f"hot_number:{top.ref}")


async def test_what_a_read_returns_does_not_grow_with_the_flood(
    verifier: Verifier, clock: ManualClock, outbox: MemoryTransport
) -> None:
    """Ten times the flood in the same minutes: more counted, not more rows to read."""
    store = verifier.store
    await traffic(verifier, clock, outbox, 5)
    now = clock()

    async def rows_read() -> tuple[int, int]:
        rows = await store.list_event_counts(now - 3600, now + 1, ("t", "r", "df"))
        tops = await store.top_event_counts("q", now - 3600, now + 1, 10)
        return len(rows) + len(tops), sum(r.count for r in rows)

    before, counted_before = await rows_read()
    for _ in range(500):  # at the same time: the same minute
        with contextlib.suppress(OtpguardError):
            await verifier.start(HOT, client_ip=IP)
    after, counted_after = await rows_read()
    assert counted_after == counted_before + 2 * 500  # each refusal: t| and r| kinds
    assert after == before
