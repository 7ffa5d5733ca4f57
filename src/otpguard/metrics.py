"""Prometheus metrics, fed by a Verifier listener and a latency middleware.

Each app owns a :class:`Metrics` with its own ``CollectorRegistry`` (several apps
in one process never collide). Label values are bounded: channels, event types,
refusal reasons and rules, provider codes, ISO country codes, route templates,
HTTP methods and statuses. Never a phone number, never an IP, never a code:
every label value is checked against a pattern and each label keeps at most
``MAX_VALUES`` distinct values (the rest count as ``other``).

======================================== =============================================
metric                                   labels
======================================== =============================================
otpguard_verifications_started_total     channel, country
otpguard_messages_sent_total             channel, kind (first | resend)
otpguard_checks_total                    outcome (passed | failed | locked | expired)
otpguard_refusals_total                  reason, rule
otpguard_delivery_outcomes_total         outcome (failed | a provider status), reason,
                                         provider_code
otpguard_country_events_total            country, kind (started | sent | approved |
                                         refused | delivery_failed)
otpguard_events_total                    type
otpguard_alerts_total                    rule, state (opened | resolved)
otpguard_alerts_open                     rule
otpguard_http_request_duration_seconds   method, route (the template), status
======================================== =============================================
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .events import Event, EventType
from .models import Channel

__all__ = ["CONTENT_TYPE_LATEST", "LatencyMiddleware", "Metrics", "route_label"]

MAX_VALUES = 64  # distinct values per label before the rest become "other"
_TOKEN = re.compile(r"^[a-z][a-z0-9_:.\-]{0,47}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CODE = re.compile(r"^[0-9]{1,6}$")
_EVENT_TYPES = frozenset(t.value for t in EventType)
_CHANNELS = frozenset(c.value for c in Channel)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Bounded:
    """Caps the number of distinct values one label may take."""

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}

    def __call__(self, label: str, value: str | None, pattern: re.Pattern[str] = _TOKEN) -> str:
        if value is None or value == "":
            return "none"
        if not pattern.match(value):
            return "other"
        seen = self._seen.setdefault(label, set())
        if value not in seen:
            if len(seen) >= MAX_VALUES:
                return "other"
            seen.add(value)
        return value


class Metrics:
    """One registry and its collectors; :meth:`observe` is the Verifier listener."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._label = _Bounded()
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=r)

        self.started = counter(
            "otpguard_verifications_started",
            "Verifications started (a first code sent or about to be)",
            ("channel", "country"),
        )
        self.sent = counter(
            "otpguard_messages_sent", "Messages handed to the provider", ("channel", "kind")
        )
        self.checks = counter("otpguard_checks", "Code checks by outcome", ("outcome",))
        self.refusals = counter(
            "otpguard_refusals", "Requests refused, by reason and rule", ("reason", "rule")
        )
        self.delivery = counter(
            "otpguard_delivery_outcomes",
            "Delivery failures and provider delivery reports",
            ("outcome", "reason", "provider_code"),
        )
        self.country = counter(
            "otpguard_country_events",
            "Per-country counts: started, sent, approved, refused, delivery_failed",
            ("country", "kind"),
        )
        self.events = counter("otpguard_events", "Events emitted, by type", ("type",))
        self.alerts = counter("otpguard_alerts", "Alerts opened and resolved", ("rule", "state"))
        self.alerts_open = Gauge("otpguard_alerts_open", "Open alerts", ["rule"], registry=r)
        self.latency = Histogram(
            "otpguard_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    # -- feeding ---------------------------------------------------------------

    def _country(self, e: Event) -> str:
        return self._label("country", e.country, _COUNTRY) if e.country else "unknown"

    def _channel(self, e: Event) -> str:
        return e.channel if e.channel in _CHANNELS else "none"

    def observe(self, e: Event) -> None:
        """The Verifier listener: one event in, counters up. Never raises on odd input."""
        etype = e.type if e.type in _EVENT_TYPES else "other"
        self.events.labels(etype).inc()
        country = self._country(e)
        if etype == EventType.STARTED:
            self.started.labels(self._channel(e), country).inc()
            self.country.labels(country, "started").inc()
        elif etype in (EventType.SENT, EventType.RESENT):
            kind = "first" if etype == EventType.SENT else "resend"
            self.sent.labels(self._channel(e), kind).inc()
            self.country.labels(country, "sent").inc()
        elif etype == EventType.CHECK_PASSED:
            self.checks.labels("passed").inc()
            self.country.labels(country, "approved").inc()
        elif etype == EventType.CHECK_FAILED:
            self.checks.labels("failed").inc()
        elif etype == EventType.LOCKED:
            self.checks.labels("locked").inc()
        elif etype == EventType.EXPIRED:
            self.checks.labels("expired").inc()
        elif etype == EventType.REFUSED:
            self.refusals.labels(self._label("reason", e.reason), self._label("rule", e.rule)).inc()
            self.country.labels(country, "refused").inc()
        elif etype in (EventType.DELIVERY_FAILED, EventType.DELIVERY_STATUS):
            failed = etype == EventType.DELIVERY_FAILED
            code = str(e.provider_code) if e.provider_code is not None else None
            self.delivery.labels(
                "failed" if failed else self._label("status", (e.reason or "").lower()),
                self._label("delivery_reason", e.reason) if failed else "report",
                self._label("provider_code", code, _CODE),
            ).inc()
            if failed:
                self.country.labels(country, "delivery_failed").inc()
        elif etype in (EventType.ALERT_OPENED, EventType.ALERT_RESOLVED):
            rule = self._label("alert_rule", e.rule)
            opened = etype == EventType.ALERT_OPENED
            self.alerts.labels(rule, "opened" if opened else "resolved").inc()

    def set_open_alerts(self, by_rule: Mapping[str, int]) -> None:
        """The alert evaluator reports how many alerts are open, per rule."""
        for rule, n in by_rule.items():
            self.alerts_open.labels(self._label("alert_rule", rule)).set(n)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.latency.labels(method if method in _METHODS else "other", route, str(status)).observe(
            seconds
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Scope, root_path: str) -> str:
    """The matched route's template (``/v1/verifications/{verification_id}``), never the
    raw path; a mount becomes ``<mount>/{path}``; anything else ``<unmatched>``."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    mounted = str(scope.get("root_path", ""))
    if mounted != root_path and mounted.startswith(root_path):
        return mounted[len(root_path) :] + "/{path}"
    return "<unmatched>"


class LatencyMiddleware:
    """Times every HTTP request into ``otpguard_http_request_duration_seconds``."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        root_path = str(scope.get("root_path", ""))
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(
                str(scope.get("method", "")),
                route_label(scope, root_path),
                status,
                time.perf_counter() - started,
            )
