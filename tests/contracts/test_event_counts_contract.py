"""Event counts (``otpguard.counters``): raised by the operations that store what they
count, read per minute and family, ranked, purged with the events. Every backend."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from otpguard.counters import kinds_of
from otpguard.events import Event, EventType, new_event_id
from otpguard.stores import Store

T0 = 1_800_000_000.0  # a whole minute


def event(ts: float, etype: EventType = EventType.STARTED, **fields: Any) -> Event:
    return Event(type=str(etype), ts=ts, id=new_event_id(ts), **fields)


def started(ts: float, number: str = "h1", ip: str = "192.0.2.1", country: str = "GB") -> Event:
    return event(ts, number_hash=number, number_masked=f"+44***{number}", client_ip=ip,
                 country=country)  # fmt: skip


async def totals(store: Store, since: float, until: float, *families: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for row in await store.list_event_counts(since, until, families):
        out[row.kind] += row.count
    return out


async def test_storing_events_counts_each_kind_in_its_minute(store: Store) -> None:
    await store.add_events([started(T0 + 1), started(T0 + 59, country="FR")])
    await store.add_events([started(T0 + 61)])
    await store.add_events([event(T0 + 2, EventType.CHECK_PASSED, country="GB")])
    rows = await store.list_event_counts(T0, T0 + 120, ("t",))
    assert sorted((r.minute, r.kind, r.count) for r in rows) == [
        (T0, "t|check.passed|GB", 1),
        (T0, "t|verification.started|FR", 1),
        (T0, "t|verification.started|GB", 1),
        (T0 + 60, "t|verification.started|GB", 1),
    ]
    assert await totals(store, T0, T0 + 120, "q") == {"q|h1|+44***h1": 3}
    assert await totals(store, T0, T0 + 120, "ip") == {"ip|192.0.2.1": 3}
    assert await totals(store, T0, T0 + 120, "df", "sc") == {}


async def test_a_window_reads_the_minutes_that_start_in_it(store: Store) -> None:
    await store.add_events([started(T0 + 10), started(T0 + 70), started(T0 + 130)])
    assert sum((await totals(store, T0, T0 + 180, "t")).values()) == 3
    assert sum((await totals(store, T0 + 1, T0 + 180, "t")).values()) == 2  # T0's left out
    assert sum((await totals(store, T0, T0 + 120, "t")).values()) == 2  # until: exclusive
    assert sum((await totals(store, T0 + 60, T0 + 120.5, "t")).values()) == 2
    assert await store.list_event_counts(T0 + 180, T0 + 600, ("t", "q")) == []


async def test_each_event_is_counted_under_all_its_kinds(store: Store) -> None:
    refused = event(
        T0 + 5, EventType.REFUSED, reason="admission", rule="admission", country="GB",
        number_hash="h2", client_ip="192.0.2.9",
        details={"scope": "block +44740091", "unconverted": 3},
    )  # fmt: skip
    failed = event(T0 + 6, EventType.DELIVERY_FAILED, reason="timeout", provider_code=20500)
    await store.add_events([refused, failed])
    got = await totals(store, T0, T0 + 60, "t", "r", "q", "ip", "df", "sc", "un", "px")
    assert got == Counter(kinds_of(refused) + kinds_of(failed))
    assert got["sc|0|block +44740091"] == 1 and got["un|3|block +44740091"] == 1
    assert got["df|verification.delivery_failed|20500|timeout"] == 1


async def test_repeated_refusals_count_from_the_second_as_their_example(store: Store) -> None:
    example = event(T0 + 1, EventType.REFUSED, reason="rate_limited", rule="phone",
                    number_hash="h1", country="GB")  # fmt: skip
    for i in range(4):  # the first is counted when it is stored as an event
        await store.tally_refusal(int(T0), "k", event(T0 + 1 + i, EventType.REFUSED,
                                  reason="rate_limited", rule="phone", number_hash="h1",
                                  country="GB"))  # fmt: skip
    got = await totals(store, T0, T0 + 60, "t", "r", "q")
    assert got == Counter({kind: 3 for kind in kinds_of(example)})


async def test_concurrent_writers_lose_no_count(store: Store) -> None:
    await asyncio.gather(*(store.add_events([started(T0 + i / 10)]) for i in range(40)))
    await asyncio.gather(
        *(store.tally_refusal(int(T0), "k", event(T0, EventType.REFUSED, reason="x"))
          for _ in range(21))
    )  # fmt: skip
    got = await totals(store, T0, T0 + 60, "t", "r")
    assert got["t|verification.started|GB"] == 40
    assert got["t|request.refused|"] == 20 and got["r|1|x"] == 20


async def test_top_sums_the_minutes_and_ranks_most_first(store: Store) -> None:
    events = [started(T0 + 1, "aa"), started(T0 + 61, "aa"), started(T0 + 62, "bb"),
              started(T0 + 63, "bb"), started(T0 + 64, "cc"), started(T0 + 65, "ab"),
              started(T0 + 400, "zz", ip="192.0.2.7")]  # fmt: skip
    await store.add_events(events)
    top = await store.top_event_counts("q", T0, T0 + 120, 3)
    assert top == [("q|aa|+44***aa", 2), ("q|bb|+44***bb", 2), ("q|ab|+44***ab", 1)]
    assert await store.top_event_counts("q", T0 + 60, T0 + 120, 1) == [("q|bb|+44***bb", 2)]
    assert await store.top_event_counts("ip", T0, T0 + 600, 5) == [
        ("ip|192.0.2.1", 6),
        ("ip|192.0.2.7", 1),
    ]
    assert await store.top_event_counts("q", T0, T0 + 600, 0) == []


async def test_purge_removes_counts_past_event_retention(store: Store) -> None:
    now = T0 + 100_000
    await store.add_events([started(T0 + 1)])
    await store.tally_refusal(int(T0), "k", event(T0 + 1, EventType.REFUSED, reason="x"))
    await store.tally_refusal(int(T0), "k", event(T0 + 2, EventType.REFUSED, reason="x"))
    await store.add_events([started(now - 600)])
    removed = await store.purge(now, 3600, 3600, event_horizon=86_400)
    assert removed == 2  # one event and one tally: the counts are sums, not rows of data
    assert await totals(store, T0, now, "t", "q", "ip", "r") == Counter(
        kinds_of(started(now - 600))
    )
