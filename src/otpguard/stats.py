"""Aggregations over stored events, shared by the admin API, the dashboard and the alerts.

Everything here is computed from :class:`otpguard.events.Event` rows (and the repeated
refusals counted per minute instead, as events with a ``count``), which hold a
masked number and a keyed hash of it, never the number: "top numbers" are grouped
by that hash and shown masked.

Vocabulary:

request
    somebody asked for a code: ``verification.started``, ``verification.resent``,
    or a ``request.refused`` that was not a refused *check* (rule ``failed_checks``).
send
    a message left: ``verification.sent`` or ``verification.resent``.
conversion
    ``check.passed`` / ``verification.started`` over the window.
spend
    sends x the country's price in ``price_table`` (``default_price`` otherwise),
    in whatever currency the table is written in.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import Settings
from .errors import InvalidRequest
from .events import Event, EventType
from .refusals import repeats
from .stores.base import EventQuery, Store

PAGE = 5_000
MAX_EVENTS = 200_000  # per aggregation; beyond this the figures are marked truncated
MAX_WINDOW = 31 * 86400
_WINDOW_RE = re.compile(r"^([0-9]{1,4})([mhd])$")  # [0-9]: \d matches any Unicode digit
_UNITS = {"m": 60, "h": 3600, "d": 86400}

STARTED = EventType.STARTED.value
SENT = EventType.SENT.value
RESENT = EventType.RESENT.value
PASSED = EventType.CHECK_PASSED.value
REFUSED = EventType.REFUSED.value
DELIVERY_FAILED = EventType.DELIVERY_FAILED.value
DELIVERY_STATUS = EventType.DELIVERY_STATUS.value
SEND_TYPES = frozenset({SENT, RESENT})
#: Delivery reports from the provider that mean the message did not arrive.
FAILED_REPORTS = frozenset({"failed", "undelivered"})


def parse_window(raw: str) -> int:
    """``"15m"``, ``"1h"``, ``"7d"`` -> seconds (1 minute to 31 days)."""
    m = _WINDOW_RE.match(raw.strip())
    if not m:
        raise InvalidRequest("'window' must be a number and a unit (m, h or d), like 1h or 7d")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if not 60 <= seconds <= MAX_WINDOW:
        raise InvalidRequest("'window' must be between 1m and 31d")
    return seconds


def is_request(e: Event) -> bool:
    if e.type in (STARTED, RESENT):
        return True
    return e.type == REFUSED and e.rule != "failed_checks"


def is_delivery_failure(e: Event) -> bool:
    if e.type == DELIVERY_FAILED:
        return True
    return e.type == DELIVERY_STATUS and (e.reason or "") in FAILED_REPORTS


def refusal_label(e: Event) -> str:
    """``rate_limited:phone``, ``premium_rate``, ``fraud:low_conversion``, ..."""
    reason = e.reason or "unknown"
    return f"{reason}:{e.rule}" if reason == "rate_limited" and e.rule else reason


def price_of(settings: Settings, country: str | None) -> float:
    if country is None:
        return settings.default_price
    return settings.price_table.get(country, settings.default_price)


async def event_pages(
    store: Store,
    since: float,
    until: float,
    *,
    types: Sequence[str] = (),
    cap: int = MAX_EVENTS,
) -> AsyncIterator[list[Event]]:
    """Every event with ``since <= ts < until``, newest first, one store page at a time
    (at most ``cap`` in all): a caller that only counts never holds more than a page."""
    before: str | None = None
    left = cap
    while left > 0:
        page = await store.list_events(
            EventQuery(
                types=tuple(types),
                since=since,
                until=until,
                before_id=before,
                limit=min(PAGE, left),
            )
        )
        if page:
            yield page
        left -= len(page)
        if len(page) < PAGE or not page:
            return
        before = page[-1].id
        await asyncio.sleep(0)  # let requests in between pages


async def load_events(
    store: Store,
    since: float,
    until: float,
    *,
    types: Sequence[str] = (),
    cap: int = MAX_EVENTS,
) -> tuple[list[Event], bool]:
    """Every event with ``since <= ts < until``, newest first, paging through the store.

    Returns ``(events, truncated)``; ``truncated`` is True when ``cap`` was reached."""
    out: list[Event] = []
    async for page in event_pages(store, since, until, types=types, cap=cap):
        out.extend(page)
    return out, len(out) >= cap


@dataclass(frozen=True)
class Ranked:
    label: str
    count: int
    ref: str = ""  # for numbers: the start of the keyed hash, to tell equal masks apart


@dataclass(frozen=True)
class CountryFigures:
    country: str
    started: int
    approved: int
    sends: int
    spend: float

    @property
    def conversion(self) -> float | None:
        return round(self.approved / self.started, 4) if self.started else None


@dataclass(frozen=True)
class Bucket:
    start: float
    requests: int
    sends: int
    approved: int
    refused: int


@dataclass(frozen=True)
class Stats:
    since: float
    until: float
    totals: dict[str, int]
    countries: list[CountryFigures]
    top_numbers: list[Ranked]
    top_ips: list[Ranked]
    refusals: list[Ranked]
    delivery_failures: list[Ranked]
    series: list[Bucket]
    spend: float
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def conversion(self) -> float | None:
        started, approved = self.totals.get("started", 0), self.totals.get("approved", 0)
        return round(approved / started, 4) if started else None

    def as_dict(self) -> dict[str, Any]:
        def ranked(rows: list[Ranked], name: str) -> list[dict[str, Any]]:
            return [
                {name: r.label, "count": r.count, **({"ref": r.ref} if r.ref else {})} for r in rows
            ]

        return {
            "since": self.since,
            "until": self.until,
            "window_seconds": int(self.until - self.since),
            "truncated": self.truncated,
            "totals": self.totals,
            "conversion": {
                "overall": self.conversion,
                "by_country": [
                    {
                        "country": c.country,
                        "started": c.started,
                        "approved": c.approved,
                        "conversion": c.conversion,
                    }
                    for c in self.countries
                ],
            },
            "top_numbers": ranked(self.top_numbers, "number"),
            "top_ips": ranked(self.top_ips, "ip"),
            "refusals_by_reason": ranked(self.refusals, "reason"),
            "delivery_failures_by_reason": ranked(self.delivery_failures, "reason"),
            "estimated_spend": {
                "total": round(self.spend, 4),
                "by_country": [
                    {"country": c.country, "sends": c.sends, "spend": round(c.spend, 4)}
                    for c in self.countries
                ],
            },
            "series": [
                {
                    "start": b.start,
                    "requests": b.requests,
                    "sends": b.sends,
                    "approved": b.approved,
                    "refused": b.refused,
                }
                for b in self.series
            ],
        }


def bucket_width(window: float) -> int:
    """About 24 buckets per chart, on a round number of minutes."""
    minutes = max(1, round(window / 24 / 60))
    for nice in (1, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440):
        if minutes <= nice:
            return nice * 60
    return 1440 * 60


def _top(counter: Counter[str], n: int) -> list[Ranked]:
    return [Ranked(k, v) for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def summarize(
    events: Iterable[Event],
    settings: Settings,
    since: float,
    until: float,
    *,
    top: int = 10,
    truncated: bool = False,
) -> Stats:
    """Figures for the events with ``since <= ts < until`` (others are ignored)."""
    width = bucket_width(until - since)
    first = since - since % width
    n_buckets = max(1, int((until - first + width - 1) // width))
    series = [[0, 0, 0, 0] for _ in range(n_buckets)]  # requests, sends, approved, refused

    totals: Counter[str] = Counter()
    started: Counter[str] = Counter()
    approved: Counter[str] = Counter()
    sends: Counter[str] = Counter()
    numbers: Counter[str] = Counter()
    masks: dict[str, str] = {}
    ips: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    failures: Counter[str] = Counter()

    for e in events:
        if not since <= e.ts < until:
            continue
        slot = series[min(n_buckets - 1, int((e.ts - first) // width))]
        country = e.country or "unknown"
        n = e.count  # more than 1 for counted repeats of a refusal (refusals.py)
        if is_request(e):
            totals["requests"] += n
            slot[0] += n
            if e.number_hash:
                numbers[e.number_hash] += n
                masks.setdefault(e.number_hash, e.number_masked or "?")
            if e.client_ip:
                ips[e.client_ip] += n
        if e.type == STARTED:
            totals["started"] += n
            started[country] += n
        elif e.type in SEND_TYPES:
            totals["sends"] += n
            sends[country] += n
            slot[1] += n
        elif e.type == PASSED:
            totals["approved"] += n
            approved[country] += n
            slot[2] += n
        elif e.type == REFUSED:
            totals["refused"] += n
            refusals[refusal_label(e)] += n
            slot[3] += n
        elif e.type == EventType.CHECK_FAILED.value:
            totals["checks_failed"] += n
        if is_delivery_failure(e):
            totals["delivery_failures"] += n
            failures[e.reason or "unknown"] += n

    for key in ("requests", "started", "sends", "approved", "refused", "checks_failed"):
        totals.setdefault(key, 0)
    totals.setdefault("delivery_failures", 0)
    countries = [
        CountryFigures(
            country=c,
            started=started[c],
            approved=approved[c],
            sends=sends[c],
            spend=sends[c] * price_of(settings, None if c == "unknown" else c),
        )
        for c in sorted(set(started) | set(sends) | set(approved))
    ]
    countries.sort(key=lambda c: (-(c.started + c.sends), c.country))
    return Stats(
        since=since,
        until=until,
        totals=dict(totals),
        countries=countries,
        top_numbers=[Ranked(masks[r.label], r.count, r.label[:12]) for r in _top(numbers, top)],
        top_ips=_top(ips, top),
        refusals=_top(refusals, 50),
        delivery_failures=_top(failures, 50),
        series=[Bucket(first + i * width, *row) for i, row in enumerate(series)],
        spend=sum(c.spend for c in countries),
        truncated=truncated,
    )


async def load_activity(store: Store, since: float, until: float) -> tuple[list[Event], bool]:
    """``load_events`` plus the refusals counted and not stored (``refusals.repeats``),
    newest first: what every figure is computed from."""
    events, truncated = await load_events(store, since, until)
    repeated = await repeats(store, since, until)
    if repeated:
        events = sorted([*events, *repeated], key=lambda e: e.ts, reverse=True)
    return events, truncated


async def activity_pages(store: Store, since: float, until: float) -> AsyncIterator[list[Event]]:
    """:func:`load_activity` one page at a time: the stored events newest first, with
    each counted repeat merged in at its time."""
    repeated = await repeats(store, since, until)
    i = 0
    async for page in event_pages(store, since, until):
        merged: list[Event] = []
        for e in page:
            while i < len(repeated) and repeated[i].ts > e.ts:
                merged.append(repeated[i])
                i += 1
            merged.append(e)
        yield merged
    if i < len(repeated):
        yield repeated[i:]


async def stats_for(store: Store, settings: Settings, now: float, window: int) -> Stats:
    events, truncated = await load_activity(store, now - window, now + 1e-6)
    return summarize(events, settings, now - window, now + 1e-6, truncated=truncated)
