"""Alert rules over the stored events, and the engine that opens and resolves alerts.

Every ``alert_interval`` seconds the engine reads the recent events (with the repeated
refusals counted per minute, ``refusals.py``) and a few store counters, asks each rule
what is wrong *now*, and compares with the open alerts: a new finding opens an alert
(stored, an ``alert.opened`` event, a notice to every sink); a finding that persists
updates the open alert quietly (one notice per incident); an open alert whose finding is
gone resolves (stored, an ``alert.resolved`` event, a notice). A finding that comes back
within ``alert_cooldown`` seconds of its resolution re-opens the same alert without
notifying anyone again (flapping is one incident).

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

Several worker processes each run this job; run the alert job in one of them only
(or accept one notice per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .config import Settings
from .errors import StorageError
from .events import Event, EventType, new_event_id
from .service import UNDELIVERABLE_REASONS, Verifier
from .sinks import Dispatcher, Notice
from .stats import (
    DELIVERY_FAILED,
    PASSED,
    REFUSED,
    SEND_TYPES,
    is_delivery_failure,
    is_request,
    load_activity,
)
from .stores.base import Alert, Store

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("otpguard.alerts")

MAX_FINDINGS_PER_RULE = 20  # the busiest subjects only; an attack on 10,000 numbers is one page
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
class Finding:
    """What a rule sees wrong now. ``key`` identifies the subject within the rule."""

    rule: str
    key: str
    subject: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def alert_id(self) -> str:
        return f"{self.rule}:{self.key}"


@dataclass(frozen=True)
class Snapshot:
    now: float
    settings: Settings
    store: Store
    events: Sequence[Event]  # newest first
    truncated: bool = False

    def within(self, seconds: float, *, end: float | None = None) -> Iterator[Event]:
        """Events with ``end - seconds <= ts <= end`` (``end`` defaults to now)."""
        end = self.now if end is None else end
        for e in self.events:
            if end - seconds <= e.ts <= end:
                yield e


Rule = Callable[[Snapshot], Awaitable[list[Finding]]]


def _busiest(counter: Counter[str], over: int) -> list[tuple[str, int]]:
    rows = [(k, n) for k, n in counter.items() if n > over]
    rows.sort(key=lambda kv: (-kv[1], kv[0]))
    return rows[:MAX_FINDINGS_PER_RULE]


# -- the rules ------------------------------------------------------------------------------


async def request_spike(snap: Snapshot) -> list[Finding]:
    s = snap.settings
    w, base = s.alert_spike_window, s.alert_spike_baseline
    recent = sum(e.count for e in snap.within(w) if is_request(e))
    before = sum(
        e.count
        for e in snap.within(base, end=snap.now - w)
        if is_request(e) and e.ts < snap.now - w
    )
    per_window = before * w / base
    if recent < s.alert_spike_min or recent <= s.alert_spike_factor * per_window:
        return []
    minutes = w // 60
    return [
        Finding(
            "request_spike",
            "all",
            "all requests",
            f"{recent} code requests in the last {minutes} min against "
            f"{per_window:.1f} per {minutes} min over the preceding {base // 60} min",
            {"recent": recent, "baseline_per_window": round(per_window, 2), "window_s": w},
        )
    ]


async def hot_number(snap: Snapshot) -> list[Finding]:
    s = snap.settings
    counts: Counter[str] = Counter()
    masks: dict[str, str] = {}
    for e in snap.within(s.alert_hot_window):
        if is_request(e) and e.number_hash:
            counts[e.number_hash] += e.count
            masks.setdefault(e.number_hash, e.number_masked or "?")
    return [
        Finding(
            "hot_number",
            h[:16],
            f"number {masks[h]}",
            f"{n} code requests for {masks[h]} in {s.alert_hot_window // 60} min "
            f"(threshold {s.alert_number_threshold})",
            {"requests": n, "number": masks[h], "ref": h[:12], "window_s": s.alert_hot_window},
        )
        for h, n in _busiest(counts, s.alert_number_threshold)
    ]


async def hot_ip(snap: Snapshot) -> list[Finding]:
    s = snap.settings
    counts: Counter[str] = Counter()
    for e in snap.within(s.alert_hot_window):
        if is_request(e) and e.client_ip and e.client_ip != "unknown":
            counts[e.client_ip] += e.count
    return [
        Finding(
            "hot_ip",
            ip,
            f"ip {ip}",
            f"{n} code requests from {ip} in {s.alert_hot_window // 60} min "
            f"(threshold {s.alert_ip_threshold})",
            {"requests": n, "ip": ip, "window_s": s.alert_hot_window},
        )
        for ip, n in _busiest(counts, s.alert_ip_threshold)
    ]


def _low(sent: int, ok: int, s: Settings) -> bool:
    return sent >= s.alert_conversion_min_sends and ok / sent < s.alert_conversion_min_rate


async def conversion_drop(snap: Snapshot) -> list[Finding]:
    s = snap.settings
    sent: Counter[str] = Counter()
    ok: Counter[str] = Counter()
    prefixes: set[str] = set()
    for e in snap.within(s.alert_conversion_window):
        if e.type in SEND_TYPES and e.country:
            sent[e.country] += 1
        elif e.type == PASSED and e.country:
            ok[e.country] += 1
        # Events keep no prefix (with the masked number it would rebuild the number):
        # prefixes come from the fraud rules, which name the ones they watch.
        subject = str(e.details.get("subject", ""))
        if subject.startswith("prefix ") and (
            e.rule == "low_conversion" or (e.type == REFUSED and e.reason == "fraud:low_conversion")
        ):
            prefixes.add(subject.removeprefix("prefix "))
    out = []
    minutes = s.alert_conversion_window // 60
    for country, n in sorted(sent.items()):
        if _low(n, ok[country], s):
            out.append(
                Finding(
                    "conversion_drop",
                    f"country:{country}",
                    f"country {country}",
                    f"{ok[country]} approved of {n} sent to {country} in {minutes} min "
                    f"({ok[country] / n:.0%}, minimum {s.alert_conversion_min_rate:.0%})",
                    {"country": country, "sent": n, "approved": ok[country]},
                )
            )
    fw = s.fraud_conversion_window
    for prefix in sorted(prefixes)[:MAX_FINDINGS_PER_RULE]:
        n = await snap.store.count(f"conv:sent:prefix:{prefix}", fw, snap.now)
        k = await snap.store.count(f"conv:ok:prefix:{prefix}", fw, snap.now)
        if _low(n, k, s):
            out.append(
                Finding(
                    "conversion_drop",
                    f"prefix:{prefix}",
                    f"prefix {prefix}",
                    f"{k} approved of {n} sent to numbers {prefix}xxxx in {fw // 60} min "
                    "(SMS pumping looks like this)",
                    {"prefix": prefix, "sent": n, "approved": k},
                )
            )
    return out


async def refused_destination(snap: Snapshot) -> list[Finding]:
    s = snap.settings
    counts: Counter[str] = Counter()
    for e in snap.within(s.alert_hot_window):
        reason = e.reason or ""
        if e.type == REFUSED and (
            reason in DESTINATION_REASONS or reason.startswith("number_type:")
        ):
            counts[reason] += e.count
    return [
        Finding(
            "refused_destination",
            reason,
            f"destination {reason}",
            f"{n} requests refused as {reason} in {s.alert_hot_window // 60} min",
            {"reason": reason, "refused": n},
        )
        for reason, n in _busiest(counts, s.alert_refused_destination_threshold - 1)
    ]


async def delivery_failures(snap: Snapshot) -> list[Finding]:
    s = snap.settings
    failed = attempted = 0
    for e in snap.within(s.alert_hot_window):
        if e.type in SEND_TYPES or e.type == DELIVERY_FAILED:
            attempted += e.count
        if is_delivery_failure(e):
            failed += e.count
    if failed < s.alert_delivery_failure_min:
        return []
    rate = failed / max(attempted, failed)
    if rate < s.alert_delivery_failure_rate:
        return []
    return [
        Finding(
            "delivery_failures",
            "all",
            "deliveries",
            f"{failed} of {max(attempted, failed)} deliveries failed in "
            f"{s.alert_hot_window // 60} min ({rate:.0%})",
            {"failed": failed, "attempted": attempted, "rate": round(rate, 3)},
        )
    ]


async def admission_pressure(snap: Snapshot) -> list[Finding]:
    """Admission refusals and challenges per scope, with the figures behind them."""
    s = snap.settings
    refused: Counter[str] = Counter()
    challenged: Counter[str] = Counter()
    unconverted: dict[str, int] = {}
    for e in snap.within(s.alert_hot_window):
        scope = e.details.get("scope") if e.type == REFUSED else None
        if not isinstance(scope, str):
            continue
        if e.reason == "challenge_required":
            challenged[scope] += e.count
        else:
            refused[scope] += e.count
        unconverted.setdefault(scope, int(e.details.get("unconverted", 0) or 0))
    both = refused + challenged
    return [
        Finding(
            "admission_pressure",
            scope,
            scope,
            f"{scope} is under pressure: {refused[scope]} starts refused and "
            f"{challenged[scope]} challenged in {s.alert_hot_window // 60} min; "
            f"{unconverted[scope]} codes sent there recently were never typed",
            {
                "scope": scope,
                "refused": refused[scope],
                "challenged": challenged[scope],
                "unconverted": unconverted[scope],
            },
        )
        for scope, _ in _busiest(both, s.alert_admission_threshold - 1)
    ]


async def budget_near_cap(snap: Snapshot) -> list[Finding]:
    s = snap.settings
    scopes = [
        ("global", "budget:global", limit, w) for limit, w in s.windows("fraud_budget_global")
    ]
    scopes += [
        (f"country {c}", f"budget:country:{c}", limit, w)
        for c in s.allowed_countries
        for limit, w in s.windows("fraud_budget_country")
    ]
    out = []
    for scope, key, limit, w in scopes:
        used = await snap.store.count(key, w, snap.now)
        if used >= s.alert_budget_ratio * limit:
            span = f"{w // 3600}h" if w % 3600 == 0 else f"{w // 60}m"
            out.append(
                Finding(
                    "budget_near_cap",
                    f"{scope.replace(' ', ':')}:{w}",
                    f"{scope} budget {span}",
                    f"{used} of {limit} sends of the {scope} {span} budget used "
                    f"({used / limit:.0%}; sends stop at 100%)",
                    {"scope": scope, "used": used, "limit": limit, "window_s": w},
                )
            )
    return out


async def provider_errors(snap: Snapshot) -> list[Finding]:
    s = snap.settings
    codes: Counter[str] = Counter()
    for e in snap.within(s.alert_hot_window):
        if e.type == DELIVERY_FAILED and (e.reason or "") not in UNDELIVERABLE_REASONS:
            codes[str(e.provider_code) if e.provider_code is not None else "none"] += 1
    n = sum(codes.values())
    if n < s.alert_provider_error_threshold:
        return []
    return [
        Finding(
            "provider_errors",
            "provider",
            "SMS/voice provider",
            f"{n} provider errors in {s.alert_hot_window // 60} min "
            f"(codes: {', '.join(f'{c} x{k}' for c, k in codes.most_common(5))})",
            {"errors": n, "provider_codes": dict(codes.most_common(10))},
        )
    ]


async def store_errors(snap: Snapshot) -> list[Finding]:
    n = sum(1 for e in snap.within(snap.settings.alert_hot_window) if e.type == "store.error")
    if not n:
        return []
    return [Finding("store_errors", "store", "store", f"{n} store errors recorded", {"errors": n})]


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

STORE_DOWN = Finding(
    "store_errors", "store", "store", "the store failed while alerts were evaluated"
)


# -- the engine -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    opened: list[Alert]
    resolved: list[Alert]
    open: list[Alert]


class AlertEngine:
    """Evaluates :data:`RULES`; ``evaluate(now)`` is one pass, ``run(stop)`` the job."""

    def __init__(
        self,
        verifier: Verifier,
        dispatcher: Dispatcher,
        *,
        metrics: Metrics | None = None,
        rules: Sequence[Rule] = RULES,
    ) -> None:
        self.verifier = verifier
        self.settings = verifier.settings
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.rules = list(rules)
        self._open: dict[str, Alert] = {}
        self._resolved: dict[str, Alert] = {}
        self._loaded = False

    async def _load(self, now: float) -> None:
        if self._loaded:
            return
        store = self.verifier.store
        for a in await store.list_alerts(status="open"):
            self._open[a.id] = a
        for a in await store.list_alerts(
            since=now - self.settings.alert_cooldown, status="resolved"
        ):
            self._resolved.setdefault(a.id, a)
        self._loaded = True

    async def _snapshot(self, now: float) -> Snapshot:
        s = self.settings
        horizon = max(
            s.alert_spike_window + s.alert_spike_baseline,
            s.alert_conversion_window,
            s.alert_hot_window,
        )
        events, truncated = await load_activity(self.verifier.store, now - horizon, now + 1e-6)
        return Snapshot(now, s, self.verifier.store, events, truncated)

    async def evaluate(self, now: float | None = None) -> Evaluation:
        """One pass: open, update and resolve alerts; notify sinks without awaiting them."""
        now = self.verifier.clock() if now is None else now
        try:
            await self._load(now)
            snap = await self._snapshot(now)
            findings: list[Finding] = []
            for rule in self.rules:
                findings.extend(await rule(snap))
            judged = {f.__name__ for f in self.rules}
        except StorageError:
            # Nothing else can be judged without the store: keep other alerts as they are.
            findings, judged = [STORE_DOWN], {"store_errors"}
        current = {f.alert_id: f for f in findings}
        opened: list[Alert] = []
        resolved: list[Alert] = []

        for aid, f in current.items():
            existing = self._open.get(aid)
            if existing is not None:
                alert = replace(
                    existing,
                    updated_at=now,
                    message=f.message,
                    details={**existing.details, **f.details},
                )
                await self._save(alert)
                self._open[aid] = alert
                continue
            previous = self._resolved.pop(aid, None)
            cooled = (
                previous is None
                or previous.resolved_at is None
                or now - previous.resolved_at >= self.settings.alert_cooldown
            )
            if previous is not None and not cooled:
                flaps = int(previous.details.get("flaps", 0)) + 1
                alert = replace(
                    previous,
                    status="open",
                    updated_at=now,
                    resolved_at=None,
                    message=f.message,
                    details={**f.details, "flaps": flaps, "notified": False},
                )
                await self._save(alert)
            else:
                alert = Alert(
                    id=aid,
                    rule=f.rule,
                    subject=f.subject,
                    status="open",
                    opened_at=now,
                    updated_at=now,
                    message=f.message,
                    details={**f.details, "notified": True},
                )
                await self._save(alert)
                await self._announce(alert, "opened", now)
                opened.append(alert)
            self._open[aid] = alert

        for aid, alert in list(self._open.items()):
            if aid in current or alert.rule not in judged:
                continue
            done = replace(alert, status="resolved", updated_at=now, resolved_at=now)
            del self._open[aid]
            self._resolved[aid] = done
            await self._save(done)
            if alert.details.get("notified", True):
                await self._announce(done, "resolved", now)
                resolved.append(done)

        if self.metrics is not None:
            by_rule = dict.fromkeys(RULE_NAMES, 0)
            for a in self._open.values():
                by_rule[a.rule] = by_rule.get(a.rule, 0) + 1
            self.metrics.set_open_alerts(by_rule)
        return Evaluation(opened, resolved, sorted(self._open.values(), key=lambda a: a.id))

    async def _save(self, alert: Alert) -> None:
        try:
            await self.verifier.store.put_alert(alert)
        except StorageError:
            log.warning("could not store alert %s: store unavailable", alert.id)

    async def _announce(self, alert: Alert, state: str, now: float) -> None:
        self.dispatcher.submit(Notice(state, alert))
        etype = EventType.ALERT_OPENED if state == "opened" else EventType.ALERT_RESOLVED
        event = Event(
            type=etype.value,
            ts=now,
            id=new_event_id(now),
            rule=alert.rule,
            reason=state,
            details={"alert_id": alert.id, "subject": alert.subject, "message": alert.message},
        )
        with contextlib.suppress(StorageError):
            await self.verifier._emit(event)

    async def run(self, stop: asyncio.Event) -> None:
        """The ``app.state.jobs`` job: evaluate every ``alert_interval`` seconds."""
        while not stop.is_set():
            try:
                await self.evaluate()
            except Exception:  # a bug in a rule must not stop monitoring for good
                log.exception("alert evaluation failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.alert_interval)
