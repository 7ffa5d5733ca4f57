"""The alert rules: what each one finds wrong now, over the event counts.

Each rule reads a :class:`Snapshot` (the per-minute event counts of the recent
minutes, and a few rate counters through the Verifier) and returns what
it finds wrong (:class:`Symptom`); ``alerts.py`` turns symptoms into alerts.

=================== ===================================================================
rule                fires when (settings, defaults in docs/monitoring.md)
=================== ===================================================================
request_spike       requests in the last ``alert_spike_window`` s >= ``alert_spike_min``
                    and > ``alert_spike_factor`` x the average per window over the
                    preceding ``alert_spike_baseline`` s
hot_number          one number (grouped by its keyed hash) made more than
                    ``alert_number_threshold`` requests in ``alert_hot_window`` s
hot_ip              one client IP made more than ``alert_ip_threshold`` requests in
                    ``alert_hot_window`` s
conversion_drop     a country, or a prefix the fraud rules flagged, had at least
                    ``alert_conversion_min_sends`` sends in ``alert_conversion_window`` s
                    and approved/sent below ``alert_conversion_min_rate``
refused_destination ``alert_refused_destination_threshold`` or more requests for premium-
                    rate, shared-cost, blocklisted or non-allowed destinations (per reason)
                    in ``alert_hot_window`` s
delivery_failures   at least ``alert_delivery_failure_min`` failed deliveries in
                    ``alert_hot_window`` s and failed/attempted >= ``alert_delivery_failure_rate``
admission_pressure  ``alert_admission_threshold`` or more starts refused or challenged by
                    one admission scope (a country, a number block, all traffic, an API
                    key) in ``alert_hot_window`` s: codes sent there are not being typed
budget_near_cap     a send budget (``fraud_budget_global``, ``fraud_budget_country``) is
                    used to ``alert_budget_ratio`` of its cap
provider_errors     ``alert_provider_error_threshold`` or more provider errors (not a bad
                    destination: timeouts, 5xx, auth) in ``alert_hot_window`` s
store_errors        the store fails during evaluation, or ``store.error`` events were
                    recorded in ``alert_hot_window`` s
=================== ===================================================================
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import AlertsSection
from .counters import fields_of
from .service import UNDELIVERABLE_REASONS, Verifier
from .stats import DELIVERY_FAILED, PASSED, RESENT, SEND_TYPES, STARTED
from .stores.base import EventCount

MAX_SYMPTOMS_PER_RULE = 20  # the busiest subjects only; an attack on 10,000 numbers is one page
DESTINATION_REASONS = frozenset(
    {"premium_rate", "shared_cost", "country_not_allowed", "blocklisted"}
)
RULE_NAMES = (
    "request_spike",
    "hot_number",
    "hot_ip",
    "conversion_drop",
    "refused_destination",
    "delivery_failures",
    "admission_pressure",
    "budget_near_cap",
    "provider_errors",
    "store_errors",
)


@dataclass(frozen=True)
class Symptom:
    """What a rule sees wrong now. ``key`` identifies the subject within the rule."""

    rule: str
    key: str
    subject: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        return f"{self.rule}:{self.key}"


#: The families of counts a snapshot holds; numbers and IPs are asked for their top.
SNAPSHOT_FAMILIES = ("t", "r", "df", "sc", "un", "px")


@dataclass(frozen=True)
class Snapshot:
    now: float
    section: AlertsSection  # the alerts' settings (``settings.alerts``)
    verifier: Verifier  # the rate counters and the busiest kinds are read through it
    counts: Sequence[EventCount]  # of SNAPSHOT_FAMILIES, over the longest window
    truncated: bool = False

    def within(
        self, seconds: float, family: str, *, until: float | None = None
    ) -> Iterator[tuple[list[str], int]]:
        """``(fields, count)`` of ``family``'s counts in the minutes that start in
        ``[now - seconds, until)`` (``until`` defaults to just after now)."""
        since = self.now - seconds
        end = self.now + 1e-6 if until is None else until
        for r in self.counts:
            if since <= r.minute < end and r.kind.startswith(family + "|"):
                yield fields_of(r.kind)[1], r.count

    async def top(self, family: str, seconds: float, limit: int) -> list[tuple[list[str], int]]:
        """``(fields, count)`` of the busiest kinds of ``family`` (``q``, ``ip``) over
        the last ``seconds``, ranked by the store."""
        rows = await self.verifier.top_event_counts(
            family, self.now - seconds, self.now + 1e-6, limit
        )
        return [(fields_of(kind)[1], n) for kind, n in rows]

    def requests(self, seconds: float, *, until: float | None = None) -> int:
        started = sum(
            n for (etype, _), n in self.within(seconds, "t", until=until) if etype in REQUESTS
        )
        refused = sum(n for (flag, _), n in self.within(seconds, "r", until=until) if flag == "1")
        return started + refused


REQUESTS = frozenset({STARTED, RESENT})


Rule = Callable[[Snapshot], Awaitable[list[Symptom]]]


def _busiest(counter: Counter[str], over: int) -> list[tuple[str, int]]:
    rows = [(k, n) for k, n in counter.items() if n > over]
    rows.sort(key=lambda kv: (-kv[1], kv[0]))
    return rows[:MAX_SYMPTOMS_PER_RULE]


# -- the rules ------------------------------------------------------------------------------


async def request_spike(snap: Snapshot) -> list[Symptom]:
    s = snap.section
    w, base = s.spike_window, s.spike_baseline
    recent = snap.requests(w)
    before = snap.requests(w + base, until=snap.now - w)
    per_window = before * w / base
    if recent < s.spike_min or recent <= s.spike_factor * per_window:
        return []
    minutes = w // 60
    return [
        Symptom(
            "request_spike",
            "all",
            "all requests",
            f"{recent} code requests in the last {minutes} min against "
            f"{per_window:.1f} per {minutes} min over the preceding {base // 60} min",
            {"recent": recent, "baseline_per_window": round(per_window, 2), "window_s": w},
        )
    ]


async def hot_number(snap: Snapshot) -> list[Symptom]:
    s = snap.section
    w = s.hot_window
    top = await snap.top("q", w, MAX_SYMPTOMS_PER_RULE)
    busiest = [(h, masked, n) for (h, masked), n in top if n > s.number_threshold]
    return [
        Symptom(
            "hot_number",
            h[:16],
            f"number {masked}",
            f"{n} code requests for {masked} in {w // 60} min (threshold {s.number_threshold})",
            {"requests": n, "number": masked, "ref": h[:12], "window_s": w},
        )
        for h, masked, n in busiest
    ]


async def hot_ip(snap: Snapshot) -> list[Symptom]:
    s = snap.section
    top = await snap.top("ip", s.hot_window, MAX_SYMPTOMS_PER_RULE + 1)
    busiest = [(ip, n) for (ip,), n in top if ip != "unknown" and n > s.ip_threshold]
    return [
        Symptom(
            "hot_ip",
            ip,
            f"ip {ip}",
            f"{n} code requests from {ip} in {s.hot_window // 60} min (threshold {s.ip_threshold})",
            {"requests": n, "ip": ip, "window_s": s.hot_window},
        )
        for ip, n in busiest[:MAX_SYMPTOMS_PER_RULE]
    ]


def _low(sent: int, ok: int, s: AlertsSection) -> bool:
    return sent >= s.conversion_min_sends and ok / sent < s.conversion_min_rate


async def conversion_drop(snap: Snapshot) -> list[Symptom]:
    s = snap.section
    sent: Counter[str] = Counter()
    ok: Counter[str] = Counter()
    w = s.conversion_window
    for (etype, country), n in snap.within(w, "t"):
        if etype in SEND_TYPES and country:
            sent[country] += n
        elif etype == PASSED and country:
            ok[country] += n
    # The prefixes the fraud rules flagged (events keep none: ``counters.kinds_of``).
    prefixes = {fields[0] for fields, _ in snap.within(w, "px")}
    out = []
    minutes = s.conversion_window // 60
    for country, n in sorted(sent.items()):
        if _low(n, ok[country], s):
            out.append(
                Symptom(
                    "conversion_drop",
                    f"country:{country}",
                    f"country {country}",
                    f"{ok[country]} approved of {n} sent to {country} in {minutes} min "
                    f"({ok[country] / n:.0%}, minimum {s.conversion_min_rate:.0%})",
                    {"country": country, "sent": n, "approved": ok[country]},
                )
            )
    fw = s.conversion_counters_window
    for prefix in sorted(prefixes)[:MAX_SYMPTOMS_PER_RULE]:
        n = await snap.verifier.recent_count(f"conv:sent:prefix:{prefix}", fw, now=snap.now)
        k = await snap.verifier.recent_count(f"conv:ok:prefix:{prefix}", fw, now=snap.now)
        if _low(n, k, s):
            out.append(
                Symptom(
                    "conversion_drop",
                    f"prefix:{prefix}",
                    f"prefix {prefix}",
                    f"{k} approved of {n} sent to numbers {prefix}xxxx in {fw // 60} min "
                    "(SMS pumping looks like this)",
                    {"prefix": prefix, "sent": n, "approved": k},
                )
            )
    return out


async def refused_destination(snap: Snapshot) -> list[Symptom]:
    s = snap.section
    counts: Counter[str] = Counter()
    for (_, reason), n in snap.within(s.hot_window, "r"):
        if reason in DESTINATION_REASONS or reason.startswith("number_type:"):
            counts[reason] += n
    return [
        Symptom(
            "refused_destination",
            reason,
            f"destination {reason}",
            f"{n} requests refused as {reason} in {s.hot_window // 60} min",
            {"reason": reason, "refused": n},
        )
        for reason, n in _busiest(counts, s.refused_destination_threshold - 1)
    ]


async def delivery_failures(snap: Snapshot) -> list[Symptom]:
    s = snap.section
    w = s.hot_window
    attempted = sum(
        n
        for (etype, _), n in snap.within(w, "t")
        if etype in SEND_TYPES or etype == DELIVERY_FAILED
    )
    failed = sum(n for _, n in snap.within(w, "df"))
    if failed < s.delivery_failure_min:
        return []
    rate = failed / max(attempted, failed)
    if rate < s.delivery_failure_rate:
        return []
    return [
        Symptom(
            "delivery_failures",
            "all",
            "deliveries",
            f"{failed} of {max(attempted, failed)} deliveries failed in "
            f"{s.hot_window // 60} min ({rate:.0%})",
            {"failed": failed, "attempted": attempted, "rate": round(rate, 3)},
        )
    ]


async def admission_pressure(snap: Snapshot) -> list[Symptom]:
    """Admission refusals and challenges per scope, with the figures behind them."""
    s = snap.section
    refused: Counter[str] = Counter()
    challenged: Counter[str] = Counter()
    for (flag, scope), n in snap.within(s.hot_window, "sc"):
        (challenged if flag == "1" else refused)[scope] += n
    # The newest minute's figure (the highest, should it have changed in that minute).
    newest: dict[str, tuple[int, int]] = {}
    for r in snap.counts:
        family, fields = fields_of(r.kind)
        if family == "un" and r.minute >= snap.now - s.hot_window:
            figure = (r.minute, int(fields[0]))
            newest[fields[1]] = max(newest.get(fields[1], figure), figure)
    unconverted = {scope: figure for scope, (_, figure) in newest.items()}
    both = refused + challenged
    return [
        Symptom(
            "admission_pressure",
            scope,
            scope,
            f"{scope} is under pressure: {refused[scope]} starts refused and "
            f"{challenged[scope]} challenged in {s.hot_window // 60} min; "
            f"{unconverted[scope]} codes sent there recently were never typed",
            {
                "scope": scope,
                "refused": refused[scope],
                "challenged": challenged[scope],
                "unconverted": unconverted[scope],
            },
        )
        for scope, _ in _busiest(both, s.admission_threshold - 1)
    ]


async def budget_near_cap(snap: Snapshot) -> list[Symptom]:
    s = snap.section
    scopes = [("global", "budget:global", limit, w) for limit, w in s.budget_global]
    scopes += [
        (f"country {c}", f"budget:country:{c}", limit, w)
        for c in s.budget_countries
        for limit, w in s.budget_country
    ]
    out = []
    for scope, key, limit, w in scopes:
        used = await snap.verifier.recent_count(key, w, now=snap.now)
        if used >= s.budget_ratio * limit:
            span = f"{w // 3600}h" if w % 3600 == 0 else f"{w // 60}m"
            out.append(
                Symptom(
                    "budget_near_cap",
                    f"{scope.replace(' ', ':')}:{w}",
                    f"{scope} budget {span}",
                    f"{used} of {limit} sends of the {scope} {span} budget used "
                    f"({used / limit:.0%}; sends stop at 100%)",
                    {"scope": scope, "used": used, "limit": limit, "window_s": w},
                )
            )
    return out


async def provider_errors(snap: Snapshot) -> list[Symptom]:
    s = snap.section
    codes: Counter[str] = Counter()
    for (etype, code, reason), n in snap.within(s.hot_window, "df"):
        if etype == DELIVERY_FAILED and reason not in UNDELIVERABLE_REASONS:
            codes[code or "none"] += n
    n = sum(codes.values())
    if n < s.provider_error_threshold:
        return []
    return [
        Symptom(
            "provider_errors",
            "provider",
            "SMS/voice provider",
            f"{n} provider errors in {s.hot_window // 60} min "
            f"(codes: {', '.join(f'{c} x{k}' for c, k in codes.most_common(5))})",
            {"errors": n, "provider_codes": dict(codes.most_common(10))},
        )
    ]


async def store_errors(snap: Snapshot) -> list[Symptom]:
    w = snap.section.hot_window
    n = sum(n for (etype, _), n in snap.within(w, "t") if etype == "store.error")
    if not n:
        return []
    return [Symptom("store_errors", "store", "store", f"{n} store errors recorded", {"errors": n})]


RULES: tuple[Rule, ...] = (
    request_spike,
    hot_number,
    hot_ip,
    conversion_drop,
    refused_destination,
    delivery_failures,
    admission_pressure,
    budget_near_cap,
    provider_errors,
    store_errors,
)

STORE_DOWN = Symptom(
    "store_errors", "store", "store", "the store failed while alerts were evaluated"
)
