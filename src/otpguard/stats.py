"""Figures for the admin API and the dashboard, read from the event counts.

Every figure is a sum of per-minute counters (``counters.py``) that the store raises
as it writes each event: reading them costs the same after a quiet day as after a
flood. Numbers are counted under their keyed hash, never the number: "top numbers"
are grouped by that hash and shown masked. A window is read in whole minutes (the
minutes that start in it).

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
    in whatever currency the table is written in. Email sends have no country: they
    are one row of their own, ``email``, priced at nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import AlertsSection
from .counters import (
    EMAIL_ROW,
    FAILED_REPORTS,
    is_delivery_failure,
    is_request,
    refusal_label,
)
from .errors import InvalidRequest
from .events import Event, EventType
from .refusals import repeats
from .stores.base import EventCount, EventQuery, Store

__all__ = [
    "FAILED_REPORTS",
    "Stats",
    "is_delivery_failure",
    "is_request",
    "load_activity",
    "parse_window",
    "refusal_label",
    "stats_for",
]

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
CHECK_FAILED = EventType.CHECK_FAILED.value
SEND_TYPES = frozenset({SENT, RESENT})
TOP = 10  # numbers and IPs ranked


def parse_window(raw: str) -> int:
    """``"15m"``, ``"1h"``, ``"7d"`` -> seconds (1 minute to 31 days)."""
    m = _WINDOW_RE.match(raw.strip())
    if not m:
        raise InvalidRequest("'window' must be a number and a unit (m, h or d), like 1h or 7d")
    seconds = int(m.group(1)) * _UNITS[m.group(2)]
    if not 60 <= seconds <= MAX_WINDOW:
        raise InvalidRequest("'window' must be between 1m and 31d")
    return seconds


def price_of(prices: AlertsSection, country: str | None) -> float:
    """One send's price to ``country`` from ``prices`` (the alerts section, which holds
    ``price_table`` and ``default_price``)."""
    if country == EMAIL_ROW:
        return 0.0  # SMS prices do not apply; a mail provider's cost is per plan
    if country is None:
        return prices.default_price
    return prices.price_table.get(country, prices.default_price)


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
    before: str | None = None
    while len(out) < cap:
        page = await store.list_events(
            EventQuery(
                types=tuple(types),
                since=since,
                until=until,
                before_id=before,
                limit=min(PAGE, cap - len(out)),
            )
        )
        out.extend(page)
        if len(page) < PAGE or not page:
            return out, False
        before = page[-1].id
        await asyncio.sleep(0)  # let requests in between pages
    return out, True


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
    sends_by_channel: dict[str, int] = field(default_factory=dict)
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
            "sends_by_channel": dict(sorted(self.sends_by_channel.items())),
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


def _series(rows: Iterable[EventCount], since: float, until: float) -> list[list[int]]:
    """requests, sends, approved, refused per chart bucket."""
    width = bucket_width(until - since)
    first = since - since % width
    n_buckets = max(1, int((until - first + width - 1) // width))
    series = [[0, 0, 0, 0] for _ in range(n_buckets)]
    for r in rows:
        slot = series[min(n_buckets - 1, int((r.minute - first) // width))]
        family, rest = r.kind.split("|", 1)
        if family == "r":
            if rest.startswith("1|"):
                slot[0] += r.count
            continue
        etype = rest.split("|", 1)[0]
        if etype in (STARTED, RESENT):
            slot[0] += r.count
        if etype in SEND_TYPES:
            slot[1] += r.count
        elif etype == PASSED:
            slot[2] += r.count
        elif etype == REFUSED:
            slot[3] += r.count
    return series


#: What the ``t`` counts of each type add to: a total, and a figure per country.
_TOTAL_OF = {STARTED: "started", SENT: "sends", RESENT: "sends", PASSED: "approved",
             REFUSED: "refused", CHECK_FAILED: "checks_failed"}  # fmt: skip
_PER_COUNTRY = frozenset({"started", "sends", "approved"})


def _add_up(
    rows: Iterable[EventCount],
) -> tuple[Counter[str], dict[str, Counter[str]], Counter[str], Counter[str], Counter[str]]:
    """Totals, per-country figures, refusals by label, failures by reason, and sends
    by channel."""
    channels: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    by_country: dict[str, Counter[str]] = {k: Counter() for k in _PER_COUNTRY}
    refusals: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for r in rows:
        family, rest = r.kind.split("|", 1)
        if family == "t":
            etype, country = rest.split("|", 1)
            if etype in (STARTED, RESENT):
                totals["requests"] += r.count
            name = _TOTAL_OF.get(etype)
            if name:
                totals[name] += r.count
            if name in _PER_COUNTRY:
                by_country[name][country or "unknown"] += r.count
        elif family == "r":
            request, label = rest.split("|", 1)
            refusals[label] += r.count
            totals["requests"] += r.count if request == "1" else 0
        elif family == "df":
            totals["delivery_failures"] += r.count
            failures[rest.split("|", 2)[2] or "unknown"] += r.count
        elif family == "ch":
            channels[rest or "unknown"] += r.count
    return totals, by_country, refusals, failures, channels


def summarize(
    rows: Iterable[EventCount],
    prices: AlertsSection,
    since: float,
    until: float,
    *,
    numbers: Sequence[tuple[str, int]] = (),
    ips: Sequence[tuple[str, int]] = (),
) -> Stats:
    """Figures from the ``t``, ``r`` and ``df`` counts of the window's minutes, with
    the busiest ``q`` (numbers) and ``ip`` kinds ranked by the store."""
    rows = [r for r in rows if since <= r.minute < until]
    totals, by_country, refusals, failures, channels = _add_up(rows)
    started, sends, approved = (by_country[k] for k in ("started", "sends", "approved"))
    for key in ("requests", "started", "sends", "approved", "refused", "checks_failed"):
        totals.setdefault(key, 0)
    totals.setdefault("delivery_failures", 0)
    countries = [
        CountryFigures(
            country=c,
            started=started[c],
            approved=approved[c],
            sends=sends[c],
            spend=sends[c] * price_of(prices, None if c == "unknown" else c),
        )
        for c in sorted(set(started) | set(sends) | set(approved))
    ]
    countries.sort(key=lambda c: (-(c.started + c.sends), c.country))
    width = bucket_width(until - since)
    first = since - since % width
    return Stats(
        since=since,
        until=until,
        totals=dict(totals),
        countries=countries,
        top_numbers=[_number(kind, n) for kind, n in numbers],
        top_ips=[Ranked(kind.split("|", 1)[1], n) for kind, n in ips],
        refusals=_top(refusals, 50),
        delivery_failures=_top(failures, 50),
        series=[
            Bucket(first + i * width, *row) for i, row in enumerate(_series(rows, since, until))
        ],
        spend=sum(c.spend for c in countries),
        sends_by_channel=dict(channels),
    )


def _number(kind: str, n: int) -> Ranked:
    """A ``q|<hash>|<masked>`` kind: shown masked, told apart by its hash's start."""
    _, number_hash, masked = kind.split("|", 2)
    return Ranked(masked, n, number_hash[:12])


async def load_activity(store: Store, since: float, until: float) -> tuple[list[Event], bool]:
    """``load_events`` plus the refusals counted and not stored (``refusals.repeats``),
    newest first: every refusal one by one (the figures above read counts instead)."""
    events, truncated = await load_events(store, since, until)
    repeated = await repeats(store, since, until)
    if repeated:
        events = sorted([*events, *repeated], key=lambda e: e.ts, reverse=True)
    return events, truncated


async def stats_for(store: Store, prices: AlertsSection, now: float, window: int) -> Stats:
    """The figures of the last ``window`` seconds, from the event counts alone; spend
    priced by ``prices`` (``settings.alerts``)."""
    since, until = now - window, now + 1e-6
    rows = await store.list_event_counts(since, until, ("t", "r", "df", "ch"))
    numbers = await store.top_event_counts("q", since, until, TOP)
    ips = await store.top_event_counts("ip", since, until, TOP)
    return summarize(rows, prices, since, until, numbers=numbers, ips=ips)
